"""TVM backend: specc IR -> Relax (lower.py, rules/) -> native kernels (codegen.py).

    model = specc.load("specs/resnet18.nn").to_tvm("tvm-cpu")        # build(spec, "tvm-cpu")
    logits = model(image)                                            # numpy in -> numpy out, torch in -> torch out

The runner takes the same weights as the emitted PyTorch module (`weights=` a state_dict, an nn.Module, a .npz or
.pt file); without them it uses the PyTorch module's own initialisation (seeded), so both backends compute the
same function. BatchNorm runs in eval mode, dropout is the identity.

`specc compile --target tvm-cpu|tvm-cuda -o out/` writes out/<model>.so (for a CPU, weights built in), out/<model>.npz
(the weights, by PyTorch state_dict name; a CUDA runner uploads them from there) and out/<model>_tvm.py (a small
runner), all or nothing.

The package, by room:
  target.py     which targets this backend builds (resolve_target)
  build.py      the build driver: IR at the target's level -> Relax (lower.py) -> executable (codegen.py) -> runner
  weights.py    the weights a build binds, by state_dict name
  runtime.py    TVMModel: a compiled model in this process
  artifacts.py  `specc compile --target tvm-*`: library, weights and runner script (runner_template.py) on disk
  tuned.py / tune.py   the tuned-kernel cache every CPU compile reads / `specc tune`, which fills it
  diff.py       `specc diff`: PyTorch and TVM node by node

TVM is imported only when a function here is called (it takes seconds to import).
"""
from .artifacts import compile_files
from .build import build, ir_module, lower_spec
from .runtime import TVMModel
from .target import resolve_target
from .weights import load_weights

__all__ = ["TVMModel", "build", "compile_files", "ir_module", "load_weights", "lower_spec", "resolve_target"]
