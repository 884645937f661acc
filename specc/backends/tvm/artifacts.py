"""`specc compile --target tvm-*`: the library, the weights by state_dict name and a runner script, written all or
nothing. A CPU library has the weights built in (constants its schedules fold: packed layouts, batchnorm); a CUDA
library leaves them out (build(bind_weights=False)), and the runner uploads the .npz to the GPU once when it loads:
a GPU model's weights are not on disk twice.

The runner is runner_template.py, a real Python file, with one line replaced: ``MODEL = {...}``, the compiled model's
data (name, target, inputs, outputs...) written as a Python literal with repr. No name from a spec, a target or a
file name is ever pasted into code, so none can run as code when the runner runs.
"""
from __future__ import annotations

import ast
import hashlib
import io
from pathlib import Path

import numpy as np

from ...types import DTYPES
from .build import build
from .runtime import TVMModel
from .target import resolve_target

TEMPLATE = Path(__file__).with_name("runner_template.py")
WEIGHTS_IN_LIBRARY = ("cpu",)  # the devices whose libraries hold their weights
DATA_LINE = "  # specc: model data"


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
    model = build(spec, t, weights=weights, opt_level=level, disabled=disabled, dims=dims,
                  bind_weights=t.device in WEIGHTS_IN_LIBRARY)
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / f"{stem}.so"
        model.export_library(lib)
        lib_bytes = lib.read_bytes()
    buf = io.BytesIO()
    np.savez(buf, **model.weights)
    digests = {"library": hashlib.sha256(lib_bytes).hexdigest(), "weights": hashlib.sha256(buf.getvalue()).hexdigest()}
    sidecar = f"{MARKER}: sidecar of a binary file specc wrote\n"
    files: dict[Path, str | bytes] = {
        outdir / f"{stem}.so": lib_bytes,
        outdir / f"{stem}.so.specc": sidecar,
        outdir / f"{stem}.npz": buf.getvalue(),
        outdir / f"{stem}.npz.specc": sidecar,
        outdir / f"{stem}_tvm.py": runner_script(spec, model, stem, digests),
    }
    # the manifest (SHA-256 of each file, committed last) lets a reader refuse a library and weights from two
    # different compiles: fsutil.check_manifest(folder, f"{stem}.manifest.json") == []
    return commit_files(files, force=force, manifest=f"{stem}.manifest.json")


def runner_data(spec, model: TVMModel, stem: str, digests: dict[str, str]) -> dict:
    """What the runner needs to know, as plain data. `digests`: SHA-256 of the library and the weights written with
    it; the runner refuses a library from another compile (a `.so` swapped or half-replaced under it)."""
    from ...naming import spec_relative
    from ...version import __version__

    fixed = model.lowered.fixed
    ins = [[n, DTYPES[t.dtype], [str(d.subs(fixed) if hasattr(d, "subs") else d) for d in t.shape]]
           for n, t in zip(model.input_names, model.lowered.input_types)]
    src = spec_relative(spec.module.path, spec.module.path) if spec.module.path else spec.name
    return {"model": spec.name, "library": f"{stem}.so", "weights": f"{stem}.npz", "target": model.target.name,
            "device": model.target.device, "inputs": ins, "outputs": list(model.output_names), "spec": src,
            "specc": __version__, "sha256": digests,
            # the weights main takes after the inputs, by .npz name, in order: none when the library holds them
            "params": [] if model.bound else list(model.lowered.weights)}


def runner_script(spec, model: TVMModel, stem: str, digests: dict[str, str]) -> str:
    return render_runner(runner_data(spec, model, stem, digests))


def render_runner(data: dict) -> str:
    """runner_template.py with its MODEL line holding `data` (str, int, float, bool, None, lists and dicts of them)."""
    text = TEMPLATE.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    at = [i for i, ln in enumerate(lines) if ln.rstrip("\n").endswith(DATA_LINE)]
    assert len(at) == 1, "runner_template.py must have exactly one MODEL data line"
    literal = "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in data.items()) + "}"
    try:  # repr of plain data is a literal that reads back equal; anything else is refused
        plain = ast.literal_eval(literal) == data
    except (ValueError, SyntaxError):
        plain = False
    if not plain:
        raise ValueError("runner data must be plain data")
    lines[at[0]] = f"MODEL = {{{DATA_LINE}\n{literal[2:]}\n"
    return "".join(lines)
