"""Training scripts for emitted models: `render_train_script` turns a model source, its signature and a spec's
`train { ... }` section into a short train.py (the model, a SETUP literal, a call into specc.train.runtime).

Nothing here imports torch; the runtime package that does (specc/train/runtime/) is imported by the scripts only.
"""
from .config import TASKS, TrainConfig, TrainConfigError, parse_settings
from .from_spec import model_io, train_script_for
from .render import render_train_script
from .signature import ModelIO, TensorSig, resolve_task

__all__ = [
    "TASKS",
    "ModelIO",
    "TensorSig",
    "TrainConfig",
    "TrainConfigError",
    "model_io",
    "parse_settings",
    "render_train_script",
    "resolve_task",
    "train_script_for",
]
