"""TVM backend: specc IR -> Relax (lower.py, rules/) -> native kernels (codegen.py).

    model = specc.load("specs/resnet18.nn").to_tvm("tvm-cpu")        # build(spec, "tvm-cpu")
    logits = model(image)                                            # numpy in -> numpy out, torch in -> torch out

The runner takes the same weights as the emitted PyTorch module (`weights=` a state_dict, an nn.Module, a .npz or
.pt file); without them it uses the PyTorch module's own initialisation (seeded), so both backends compute the
same function. BatchNorm runs in eval mode, dropout is the identity.

`specc compile --target tvm-cpu|tvm-cuda -o out/` writes out/<model>.so (weights built in), out/<model>.npz (those
weights, by PyTorch state_dict name) and out/<model>_tvm.py (a small runner), all or nothing.

TVM is imported only when a function here is called (it takes seconds to import).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ...types import DTYPES, TensorType


def resolve_target(target):
    """A specc Target, a target name (tvm-cpu, tvm-cuda) or a path to a .toml file."""
    from ...diagnostics import SpecError
    from ...targets import Target, load_target

    t = target if isinstance(target, Target) else load_target(target)
    if t.backend != "tvm":
        raise SpecError.at("E0107", f"target {t.name!r} is a {t.backend} target, not a TVM one")
    if t.dtype != "float32":
        raise SpecError.at("E0107", f"target {t.name!r}: the TVM backend builds float32 models, not {t.dtype}")
    allowed = {"cpu": ("specc", "tuned", "none"), "cuda": ("dlight",)}[t.device]
    if t.schedules not in allowed:
        raise SpecError.at("E0107", f"target {t.name!r}: schedules = {t.schedules!r} is not available on "
                           f"{t.device} (use {' or '.join(repr(a) for a in allowed)})")
    return t


def ir_module(spec, opt_level: int | None = None, disabled: tuple = ()):
    """The IR the backend lowers: the same passes as the PyTorch emitter at the same level, so weight names agree."""
    if not opt_level:
        return spec.module
    from ...passes import PipelineOptions, run_pipeline

    module, _ = run_pipeline(spec.module, PipelineOptions(level=opt_level, disabled=disabled))
    return module


def lower_spec(spec, module, target, **options):
    """lower() with the spec's sources attached to its errors, so they render with the spec line and a caret."""
    from ...diagnostics import SpecError
    from .lower import lower

    try:
        return lower(module, target, **options)
    except SpecError as err:
        err.sources = spec.sources
        raise


def build(spec, target="tvm-cpu", *, weights=None, opt_level: int | None = None, disabled: tuple = (),
          seed: int = 0, dims: dict[str, int] | None = None) -> "TVMModel":
    """Lower, compile and load `spec` for a TVM target; returns a callable runner. `dims` fixes symbolic dims
    (e.g. {"B": 1}) for a static-shape build, which can use kernels tuned by `specc tune` for those sizes."""
    t = resolve_target(target)
    if t.device == "cpu":
        os.environ.setdefault("TVM_NUM_THREADS", str(t.num_threads or len(os.sched_getaffinity(0))))
    from .codegen import compile_module

    module = ir_module(spec, opt_level, disabled)
    lowered = lower_spec(spec, module, t, dims=dims)
    named = load_weights(weights, lowered.weights, spec, opt_level, disabled, seed)
    ex, stats = compile_module(lowered, named, t)
    return TVMModel(ex, lowered, t, named, stats, spec.name)


# ---- weights ---------------------------------------------------------------------------------------------------

def load_weights(weights, wanted: Mapping[str, tuple[tuple[int, ...], str]], spec=None, opt_level=None,
                 disabled: tuple = (), seed: int = 0) -> dict[str, np.ndarray]:
    """Weights by state_dict name, checked against what the lowered model needs (name, shape)."""
    if weights is None:
        source = _torch_init(spec, opt_level, disabled, seed)
    elif isinstance(weights, (str, Path)):
        source = _read_weights(Path(weights))
    elif hasattr(weights, "state_dict"):
        source = weights.state_dict()
    else:
        source = weights
    out, problems = {}, []
    for name, (shape, dtype) in wanted.items():
        if name not in source:
            problems.append(f"missing {name} {list(shape)}")
            continue
        value = _numpy(source[name]).astype(dtype, copy=False)
        if tuple(value.shape) != tuple(shape):
            problems.append(f"{name}: shape {list(value.shape)}, the model needs {list(shape)}")
        out[name] = value
    if problems:
        raise ValueError("weights do not fit the model: " + "; ".join(problems))
    return out


def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _read_weights(path: Path) -> dict:
    if path.suffix == ".npz":
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.state_dict() if hasattr(state, "state_dict") else state


def _torch_init(spec, opt_level, disabled, seed) -> dict:
    """The emitted PyTorch module's default initialisation, seeded: both backends then hold the same weights."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.to_torch(opt_level=opt_level, disabled=disabled)
    return model.state_dict()


# ---- the runner ------------------------------------------------------------------------------------------------

class TVMModel:
    """A compiled model: call it with the model's inputs (numpy arrays or torch tensors)."""

    def __init__(self, executable, lowered, target, weights: dict[str, np.ndarray], stats: dict, name: str) -> None:
        self.executable = executable
        self.lowered = lowered
        self.target = target
        self.weights = weights
        self.stats = stats
        self.name = name
        self._vm = None

    @property
    def input_names(self) -> list[str]:
        return list(self.lowered.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.lowered.outputs)

    def device(self):
        import tvm

        return tvm.cuda(0) if self.target.device == "cuda" else tvm.cpu(0)

    @property
    def vm(self):
        if self._vm is None:
            from tvm import relax

            from .codegen import configure_threads

            dev = self.device()
            if self.target.device == "cuda" and not dev.exist:
                raise RuntimeError(f"{self.name} was built for CUDA but this machine has no CUDA device; "
                                   "export_library() it and run it on a GPU machine")
            if self.target.device == "cpu":
                configure_threads(self.target.num_threads)
            # pooled: buffers with symbolic sizes are reused across calls instead of allocated afresh every call
            self._vm = relax.VirtualMachine(self.executable, dev, memory_cfg="pooled")
        return self._vm

    def __call__(self, *inputs):
        arrays = self.check_inputs(inputs)
        as_torch = any(hasattr(x, "detach") for x in inputs)
        out = self.vm["main"](*[self._to_tvm(a) for a in arrays])
        outs = _flatten(out)
        conv = [self._from_tvm(o, as_torch) for o in outs]
        return conv[0] if len(conv) == 1 else tuple(conv)

    def check_inputs(self, inputs) -> list:
        """Inputs match the model's declared types; symbolic dims are bound consistently and within bounds."""
        types = self.lowered.input_types
        if len(inputs) != len(types):
            raise TypeError(f"{self.name} takes {len(types)} inputs ({', '.join(self.input_names)}), "
                            f"got {len(inputs)}")
        env: dict[str, int] = {}
        for name, x, t in zip(self.input_names, inputs, types):
            _check_one(name, x, t, env)
        for sym, bound in self.lowered.bounds.items():
            if sym in env and env[sym] > bound:
                raise ValueError(f"{sym} = {env[sym]} exceeds its bound {sym} <= {bound}")
        for sym, fixed in self.lowered.fixed.items():
            if sym in env and env[sym] != fixed:
                raise ValueError(f"{self.name} was built for {sym} = {fixed}, got {sym} = {env[sym]}")
        return list(inputs)

    def _to_tvm(self, x):
        import tvm

        if hasattr(x, "detach"):
            x = x.detach()
            if x.device.type == "cpu" and self.target.device == "cpu":
                return tvm.runtime.from_dlpack(x.contiguous())
            x = x.cpu().numpy()
        return tvm.runtime.tensor(np.ascontiguousarray(x), self.device())

    @staticmethod
    def _from_tvm(o, as_torch: bool):
        if as_torch:
            import torch

            return torch.from_dlpack(o) if o.device.dlpack_device_type() == 1 else torch.from_numpy(o.numpy())
        return o.numpy()

    def export_library(self, path: str | Path) -> Path:
        path = Path(path)
        self.executable.export_library(str(path))
        return path

    def benchmark(self, *inputs, repeat: int = 10) -> float:
        """Median seconds per call (TVM's own time_evaluator: no Python overhead)."""
        arrays = [self._to_tvm(a) for a in self.check_inputs(inputs)]
        f = self.vm.time_evaluator("main", self.device(), number=1, repeat=repeat, min_repeat_ms=0)
        return float(f(*arrays).median)

    def __repr__(self) -> str:
        return f"TVMModel({self.name}, target={self.target.name}, {len(self.weights)} weights)"


def _flatten(out) -> list:
    if hasattr(out, "numpy"):
        return [out]
    items = []
    for o in out:
        items += _flatten(o)
    return items


def _check_one(name: str, x, t: TensorType, env: dict[str, int]) -> None:
    from ...symbolic import Sym

    shape = tuple(int(d) for d in x.shape)
    dtype = str(x.dtype).removeprefix("torch.")
    want = DTYPES[t.dtype]
    if dtype != want:
        raise TypeError(f"input {name!r}: dtype {dtype}, the model expects {want} ({t})")
    if len(shape) != t.rank:
        raise ValueError(f"input {name!r}: shape {list(shape)}, the model expects {t}")
    for i, (got, d) in enumerate(zip(shape, t.shape)):
        if isinstance(d, int):
            if d != got:
                raise ValueError(f"input {name!r}: dim {i} is {got}, the model expects {t}")
        elif isinstance(d, Sym) and len(d.terms) == 1 and next(iter(d.terms.values())) == 1 and \
                len(next(iter(d.terms))) == 1:
            sym = next(iter(d.terms))[0]
            if env.setdefault(sym, got) != got:
                raise ValueError(f"input {name!r}: dim {i} ({sym}) is {got}, another input has {sym} = {env[sym]}")


# ---- specc compile --target tvm-* ----------------------------------------------------------------------------

def compile_files(spec, target, outdir: Path, force: bool = False, opt_level: int | None = None,
                  disabled: tuple = (), weights=None, dims: dict[str, int] | None = None) -> list[Path]:
    """Write <model>.so, <model>.npz and <model>_tvm.py into outdir, all or none."""
    import tempfile

    from ...fsutil import MARKER, check_targets, commit_files
    from ...naming import module_file_name

    t = resolve_target(target)
    outdir = Path(outdir)
    stem = module_file_name(spec.module.name).removesuffix(".py")
    names = [f"{stem}.so", f"{stem}.so.specc", f"{stem}.npz", f"{stem}.npz.specc", f"{stem}_tvm.py"]
    check_targets([outdir / n for n in names], force=force)  # before the (slow) build, not after it
    level = t.opt_level if opt_level is None else opt_level
    model = build(spec, t, weights=weights, opt_level=level, disabled=disabled, dims=dims)
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / f"{stem}.so"
        model.export_library(lib)
        lib_bytes = lib.read_bytes()
    buf = io.BytesIO()
    np.savez(buf, **model.weights)
    sidecar = f"{MARKER}: sidecar of a binary file specc wrote\n"
    files: dict[Path, str | bytes] = {
        outdir / f"{stem}.so": lib_bytes,
        outdir / f"{stem}.so.specc": sidecar,
        outdir / f"{stem}.npz": buf.getvalue(),
        outdir / f"{stem}.npz.specc": sidecar,
        outdir / f"{stem}_tvm.py": runner_script(spec, model, stem),
    }
    return commit_files(files, force=force)


def runner_script(spec, model: TVMModel, stem: str) -> str:
    from ... import __version__
    from ...naming import spec_relative

    fixed = model.lowered.fixed
    ins = [(n, DTYPES[t.dtype], [str(d.subs(fixed) if hasattr(d, "subs") else d) for d in t.shape])
           for n, t in zip(model.input_names, model.lowered.input_types)]
    src = spec_relative(spec.module.path, spec.module.path) if spec.module.path else spec.name
    return _RUNNER.format(version=__version__, src=src, stem=stem, target=model.target.name,
                          device=model.target.device, inputs=repr(ins), outputs=repr(model.output_names))


_RUNNER = '''# generated by specc {version} from {src} for {target}: do not edit, recompile the spec instead
"""Run {stem}.so (TVM, {target}).

    python {stem}_tvm.py [--dim B=1 ...] [input.npy ...]     # random inputs when no files are given

From Python: `run = load(); outputs = run(*numpy_arrays)`. The weights are built into the library; {stem}.npz holds
the same weights by PyTorch state_dict name (for the PyTorch module specc emits from the same spec).
"""
import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))  # TVM's own default here: 1

import numpy as np
import tvm
from tvm import relax

HERE = Path(__file__).resolve().parent
INPUTS = {inputs}  # (name, dtype, shape); named dims are symbolic
OUTPUTS = {outputs}
DEVICE = "{device}"


def load(device: str = DEVICE):
    dev = tvm.cuda(0) if device == "cuda" else tvm.cpu(0)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(HERE / "{stem}.so")), dev, memory_cfg="pooled")

    def run(*arrays):
        out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in arrays])
        return out.numpy() if hasattr(out, "numpy") else tuple(o.numpy() for o in out)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help="one .npy file per model input")
    ap.add_argument("--dim", action="append", default=[], metavar="NAME=INT", help="size of a symbolic dim")
    args = ap.parse_args()
    dims = {{k: int(v) for k, v in (d.split("=") for d in args.dim)}}
    rng = np.random.default_rng(0)
    if args.inputs:
        arrays = [np.load(p) for p in args.inputs]
    else:
        arrays = []
        for _, dtype, shape in INPUTS:
            shape = [int(d) if d.isdigit() else dims.get(d, 1) for d in shape]
            arrays.append(rng.integers(0, 2, shape).astype(dtype) if dtype.startswith("int")
                          else rng.standard_normal(shape).astype(dtype))
    run = load()
    t0 = time.perf_counter()
    out = run(*arrays)
    ms = (time.perf_counter() - t0) * 1e3
    for name, o in zip(OUTPUTS, out if isinstance(out, tuple) else (out,)):
        print(f"{{name}}: {{o.dtype}}{{list(o.shape)}} mean={{o.mean():.6g}}")
    print(f"{{ms:.1f}} ms")


if __name__ == "__main__":
    main()
'''
