"""Helpers shared by the PyTorch backend tests: which specs to build, how small, and random inputs for them."""
from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import specc
from specc.types import INT_DTYPES, TensorType

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
if str(REPO) not in sys.path:  # `from tests.references import conv` under a bare `pytest` too
    sys.path.insert(0, str(REPO))

# Overrides that keep every spec cheap on a 2-core CPU: classes=10 shrinks the classifier heads. Specs not listed
# build with their defaults; a spec whose defaults are too big to build in a test gets an entry here.
_TINY_TRANSFORMER = {"layers": 2, "heads": 4, "d": 64}
SHRINK: dict[str, dict] = {
    "alexnet": {"classes": 10},
    "vgg16": {"classes": 10},
    "resnet18": {"classes": 10},
    "resnet50": {"classes": 10},
    "bert_base": {**_TINY_TRANSFORMER, "vocab": 100, "max_pos": 16, "d_ff": 128},
    "bert_classifier": {**_TINY_TRANSFORMER, "vocab": 100, "max_pos": 16, "d_ff": 128},
    "gpt2": {**_TINY_TRANSFORMER, "vocab": 100, "ctx": 16},
    "transformer_base": {**_TINY_TRANSFORMER, "vocab": 100, "d_ff": 128, "max_len": 64},
    "vit_b16": {**_TINY_TRANSFORMER, "image_size": 32, "classes": 10, "d_ff": 128},
    "gru_lm": {"vocab": 100, "d": 32},
    "lstm_lm": {"vocab": 100, "d": 32},
    "seq2seq_attention": {"src_vocab": 100, "tgt_vocab": 100, "emb": 16, "hidden": 32, "align": 32},
    "mixtral_8x7b": {**_TINY_TRANSFORMER, "vocab": 100, "ctx": 16, "kv_heads": 2, "hidden": 64, "experts": 4},
    "deepseek_moe_16b": {**_TINY_TRANSFORMER, "layers": 3, "vocab": 100, "ctx": 16, "dense_hidden": 128, "hidden": 32,
                         "experts": 8, "top_k": 3},
    "switch_base_8": {**_TINY_TRANSFORMER, "vocab": 100, "d_ff": 128, "experts": 4},
    "llama2_7b": {**_TINY_TRANSFORMER, "vocab": 100, "ctx": 16, "kv_heads": 2, "hidden": 96},
    "dcgan": {"ngf": 8},
    "word2vec_sgns": {"vocab": 100, "d": 16},
    "clip_vit_b32": {"embed": 32, "image_size": 64, "vocab": 100, "ctx": 16, "vision_layers": 2, "text_layers": 2,
                     "vision_d": 128, "text_d": 64},
    "whisper_tiny": {"vocab": 100, "n_mels": 8, "frames": 20, "max_target": 16, "d": 64, "heads": 4, "layers": 2,
                     "d_ff": 128},
    "ddpm_cifar10": {"ch": 32, "image_size": 16},
}

# values for symbolic input dims (anything not listed: 3); small, and distinct so a swapped axis shows
DIMS = {"B": 2, "N": 2, "T": 5, "S": 6, "L": 5}


def spec_paths() -> list[Path]:
    """Every model spec in specs/ (specs/std/ holds imported blocks, not models)."""
    return sorted(SPECS.glob("*.nn"))


def load_small(path: Path) -> "specc.api.Spec":
    return specc.load(path, overrides=SHRINK.get(path.stem, {}))


def dim_env(spec) -> dict[str, int]:
    env: dict[str, int] = {}
    for i in spec.module.graph.inputs:
        t = spec.module.graph[i].type
        if isinstance(t, TensorType):
            for sym in sorted(t.symbols()):
                bound = spec.module.constraints.get(sym)
                value = DIMS.get(sym, 3)
                if bound is not None and isinstance(bound[0], int):
                    value = min(value, bound[0])
                env[sym] = value
    return env


def concrete(shape, env: dict[str, int]) -> tuple[int, ...]:
    out = []
    for d in shape:
        v = d.subs(env) if hasattr(d, "subs") else d
        assert isinstance(v, int), f"dim {d} stays symbolic under {env}"
        out.append(v)
    return tuple(out)


def random_inputs(spec, env: dict[str, int], seed: int = 0) -> list:
    """One random tensor per model input; integer inputs (token ids) are drawn from [0, 2)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in spec.module.graph.inputs:
        t = spec.module.graph[i].type
        shape = concrete(t.shape, env)
        if t.dtype in INT_DTYPES:
            out.append(torch.randint(0, 2, shape, generator=gen, dtype=getattr(torch, _torch_dtype(t.dtype))))
        elif t.dtype == "bool":
            out.append(torch.ones(shape, dtype=torch.bool))
        else:
            out.append(torch.randn(shape, generator=gen, dtype=getattr(torch, _torch_dtype(t.dtype))))
    return out


def expected_outputs(spec, env: dict[str, int]) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of each model output as the IR predicts it."""
    g = spec.module.graph
    out = []
    for o in g.outputs:
        t = g[o].type
        out.append((_torch_dtype(t.dtype), concrete(t.shape, env)))
    return out


def _torch_dtype(d: str) -> str:
    from specc.types import DTYPES

    return DTYPES[d]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def ruff_check(paths: list[Path]) -> subprocess.CompletedProcess | None:
    """`ruff check` over emitted files with default rules plus pyflakes/pycodestyle errors; None without ruff."""
    if shutil.which("ruff") is None:
        return None
    return subprocess.run(["ruff", "check", "--isolated", "--no-cache", "--line-length", "120",
                           *map(str, paths)], capture_output=True, text=True, check=False)


def module_from_source(source: str, name: str, folder) -> "types.ModuleType":
    """Emitted source written to `folder`/`name`.py and imported as module `name` (registered in sys.modules, so
    that pickling, dataclasses and torch.compile find it)."""
    import importlib.util
    import sys

    path = Path(folder) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
