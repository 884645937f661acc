"""A compiled model in this process: ``TVMModel`` checks its inputs against the model's declared types and runs the
Relax VM (numpy in -> numpy out, torch in -> torch out)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...types import DTYPES, TensorType


class TVMModel:
    """A compiled model: call it with the model's inputs (numpy arrays or torch tensors)."""

    def __init__(self, executable, lowered, target, weights: dict[str, np.ndarray], stats: dict, name: str,
                 bound: bool = True) -> None:
        self.executable = executable
        self.bound = bound  # False: the executable takes the weights as parameters (build(bind_weights=False))
        self._params: list | None = None
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
        out = self.vm["main"](*[self._to_tvm(a) for a in arrays], *self.params())
        outs = _flatten(out)
        conv = [self._from_tvm(o, as_torch) for o in outs]
        return conv[0] if len(conv) == 1 else tuple(conv)

    def params(self) -> list:
        """The weight parameters main takes after the inputs: none when the weights are built in; else the weights
        on the device, put through main_transform_params once (see codegen.lift_weights)."""
        if self.bound:
            return []
        if self._params is None:
            self._params = upload_params(self.vm, [self.weights[n] for n in self.lowered.weights], self.device())
        return self._params

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
        return float(f(*arrays, *self.params()).median)

    def __repr__(self) -> str:
        return f"TVMModel({self.name}, target={self.target.name}, {len(self.weights)} weights)"


def upload_params(vm, weights: list, dev) -> list:
    """Weights (numpy arrays in main's parameter order) -> main's weight arguments on `dev`. (The runner script's
    upload_weights does the same without specc: runner_template.py is standalone.)"""
    import tvm

    # reshape: np.ascontiguousarray may turn a 0-d weight (CLIP's logit_scale) into shape (1,)
    arrays = [tvm.runtime.tensor(np.ascontiguousarray(w).reshape(np.shape(w)), dev) for w in weights]
    return list(vm["main_transform_params"](arrays))


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
