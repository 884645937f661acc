"""Helpers for the weights tests: the real libraries (transformers, torchvision) imported so they work on CPU torch.

torchvision's compiled ops need CUDA builds; its Python model classes do not. Its import only fails because it
registers fake kernels for `torchvision::nms` and `torchvision::qnms`, which a CPU-only torch has never defined;
defining the two schemas first (torch.library) lets `torchvision.models` import. transformers imports torchvision
when it is installed, so it needs the same step."""
from __future__ import annotations

import pytest

_done = []


def _define_torchvision_ops() -> None:
    if _done:
        return
    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                   "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"):
        try:
            lib.define(schema)
        except RuntimeError:  # already defined (a real torchvision build, or another test module did it)
            pass
    _done.append(lib)  # the library object must stay alive for its definitions to stay


def torchvision_models():
    """torchvision.models, or skip the test with the reason."""
    try:
        _define_torchvision_ops()
        import torchvision.models as models
    except Exception as e:  # noqa: BLE001 - any import failure means: this machine cannot run the check
        pytest.skip(f"torchvision cannot be imported here ({type(e).__name__}: {e})")
    return models


def transformers():
    try:
        _define_torchvision_ops()
        import transformers as tf

        tf.logging.set_verbosity_error()
        tf.utils.logging.disable_progress_bar()
        tf.GPT2Config  # noqa: B018 - the lazy module raises here if the model code cannot import
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"transformers cannot be imported here ({type(e).__name__}: {e})")
    return tf
