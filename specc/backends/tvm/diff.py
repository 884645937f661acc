"""`specc diff model.nn`: run PyTorch and TVM node by node on the same weights and inputs, and name the first node
(with its spec line) where they diverge.

PyTorch side: the emitted module itself, interpreted node by node. Each IR node is evaluated with the code the
emitter writes for it (the registry's TorchRule call expression, evaluated in the emitted file's namespace with
`self` the block instance that owns the node), so submodules, weights and helpers are the emitted module's own.
TVM side: the model lowered with every node's value as an extra output ("taps"), compiled for the target.

Nodes are compared in the order they run; a node diverges when max|tvm - torch| > atol + rtol * max|torch|.
Exit status: 0 when every node agrees, 1 at the first divergence.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ...diagnostics import Diagnostic, Note
from ...ir import Graph, Module, Node
from ...naming import attribute_names, module_entry, module_keys
from ...ops import registry
from ...types import INT_DTYPES
from ...walker import Interpreter


@dataclass
class NodeDiff:
    name: str  # qualified: module path of the owning block + node name
    node: Node
    error: float  # max |tvm - torch|
    scale: float  # max |torch|
    ok: bool


def run_diff(spec, *, target: str = "tvm-cpu", dims: dict[str, int] | None = None, rtol: float = 1e-4,
             atol: float = 1e-5) -> int:
    """`specc diff`: print the comparison; 0 when every node agrees, 1 at the first divergence."""
    diffs = diff_nodes(spec, target, dims or {}, rtol=rtol, atol=atol)
    print(report(diffs, spec))
    return 0 if all(d.ok for d in diffs) else 1


def diff_nodes(spec, target="tvm-cpu", dims: dict[str, int] | None = None, rtol: float = 1e-4,
               atol: float = 1e-5, seed: int = 0) -> list[NodeDiff]:
    """Every op node's TVM and PyTorch values compared, in run order (stops after the first divergence)."""
    import torch

    from .build import lower_spec
    from .codegen import compile_module, configure_threads
    from .target import resolve_target
    from .weights import load_weights

    t = resolve_target(target)
    if t.device == "cuda":
        import tvm

        if not tvm.cuda(0).exist:
            from ...errors import UsageError

            raise UsageError(f"specc diff --target {t.name} runs the kernels: it needs a CUDA GPU, this machine has none")
    module = spec.module
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.to_torch(opt_level=0).eval()  # the module of the unoptimised IR this walks, node by node
        _random_statistics(model)
    env = _dims(module, dims or {})
    inputs = _inputs(module, env, seed)
    lowered = lower_spec(spec, module, t, taps=True)
    weights = load_weights(model, lowered.weights)
    ex, _ = compile_module(lowered, weights, t)
    if t.device == "cpu":
        configure_threads(t.num_threads)
    import tvm
    from tvm import relax

    dev = tvm.cuda(0) if t.device == "cuda" else tvm.cpu(0)
    vm = relax.VirtualMachine(ex, dev)
    out = vm["main"](*[tvm.runtime.tensor(x.numpy(), dev) for x in inputs])
    flat = [out] if hasattr(out, "numpy") else list(out)
    tvm_values = dict(zip([q for q, _ in lowered.taps], [o.numpy() for o in flat[len(lowered.outputs):]]))
    with torch.no_grad():
        torch_values = TorchInterpreter(module, model).run(inputs)
    diffs = []
    for name, node in lowered.taps:
        if name not in torch_values:
            # a node inside an op's subgraph (a moe's experts): PyTorch runs that op as one module, so the op's own
            # output is where the two sides are compared
            continue
        got, ref = tvm_values[name], torch_values[name].detach().numpy()
        err, scale = compare(got, ref)
        ok = err <= atol + rtol * scale
        diffs.append(NodeDiff(name, node, err, scale, ok))
        if not ok:
            break
    return diffs


def compare(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |got - ref|, max |ref|) where entries that are equal on both sides count as agreeing, infinities (a causal
    mask's -inf) and NaNs included, and the scale is taken over the finite reference values only."""
    if got.shape != ref.shape:
        return float("inf"), 0.0
    if not ref.size:
        return 0.0, 0.0
    got64, ref64 = got.astype(np.float64), ref.astype(np.float64)
    same = (got64 == ref64) | (np.isnan(got64) & np.isnan(ref64))
    with np.errstate(invalid="ignore"):
        delta = np.where(same, 0.0, np.abs(got64 - ref64))
    err = float(np.nan_to_num(delta, nan=np.inf, posinf=np.inf).max())
    finite = np.abs(ref64[np.isfinite(ref64)])
    return err, float(finite.max()) if finite.size else 0.0


def _random_statistics(model) -> None:
    """Seeded running statistics for batchnorm, so eval-mode batchnorm is not the identity it is after init."""
    import torch

    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape) + 0.5)
        elif name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape) * 0.1)


def _dims(module: Module, given: dict[str, int]) -> dict[str, int]:
    """Sizes for the symbolic input dims: --dim values, else B = 2 and 8 for the others (within their bounds)."""
    env = {}
    for i in module.graph.inputs:
        for sym in sorted(module.graph[i].type.symbols()):
            bound = module.constraints.get(sym, (None, None))[0]
            value = given.get(sym, 2 if sym == "B" else 8)
            env[sym] = min(value, bound) if isinstance(bound, int) else value
    return env


def _inputs(module: Module, env: dict[str, int], seed: int) -> list:
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in module.graph.inputs:
        t = module.graph[i].type
        shape = [d if isinstance(d, int) else d.subs(env) for d in t.shape]
        from ...types import DTYPES

        dtype = getattr(torch, DTYPES[t.dtype])
        if t.dtype in INT_DTYPES:
            out.append(torch.randint(0, 2, shape, generator=gen, dtype=dtype))
        elif t.dtype == "bool":
            out.append(torch.ones(shape, dtype=torch.bool))
        else:
            out.append(torch.randn(shape, generator=gen, dtype=dtype))
    return out


class TorchInterpreter(Interpreter):
    """Runs the emitted PyTorch module one IR node at a time, recording every node's value. The walk's context is
    (module path, the nn.Module that owns the graph being run)."""

    def __init__(self, module: Module, model) -> None:
        super().__init__(module)
        self.m = module
        self.model = model
        self.namespace = vars(sys.modules[type(model).__module__])
        self.values: dict[str, object] = {}
        self._attrs: dict[str, dict[str, str]] = {}

    def attributes(self, g: Graph) -> dict[str, str]:
        if g.name not in self._attrs:
            self._attrs[g.name] = attribute_names(g)
        return self._attrs[g.name]

    def run(self, inputs: list) -> dict[str, object]:
        self.run_graph(self.m.graph, list(inputs), ("", self.model))
        return self.values

    def call_context(self, g: Graph, n: Node, ctx):
        prefix, owner = ctx
        attr = self.attributes(g)[n.layer or n.name]
        return f"{prefix}{attr}.", owner.get_submodule(attr)  # `attn`, or `layer1.0` in a named stack

    def iteration_context(self, g: Graph, n: Node, i: int, ctx):
        prefix, owner = ctx
        attr = self.attributes(g)[n.layer or n.name]
        entry = module_entry(attr, i)  # `h.3`, or `layer1.4` for a repeat in a named stack
        return f"{prefix}{entry}.", owner.get_submodule(entry)

    def op(self, g: Graph, n: Node, ins: list, ctx):
        prefix, owner = ctx
        value = self.eval_op(g, n, owner, self.attributes(g), ins)
        self.values[prefix + n.name] = value
        return value

    def eval_op(self, g: Graph, n: Node, owner, attrs: dict[str, str], ins: list):
        rule = registry.get(n.target).torch
        names = [f"_v{i}" for i in range(len(ins))]
        in_types = [g[i].type for i in n.inputs]
        # layers by their module objects: a loop's path (`down_blocks.0.downsample`) is no Python attribute chain
        keys = module_keys(g, n)
        local = dict(zip(names, ins), self=owner, **{f"_layer{i}": owner.get_submodule(attrs[k])
                                                     for i, k in enumerate(keys)})
        if rule.call is not None:
            expr = rule.call(names + [f"_layer{i}" for i in range(len(keys))], n.attrs, in_types)
        else:
            local["_layer"] = owner.get_submodule(attrs[n.layer or n.name])
            expr = f"_layer({', '.join(names)})"
        return eval(expr, self.namespace, local)  # noqa: S307 - the emitter's own code for this node


def report(diffs: list[NodeDiff], spec) -> str:
    if not diffs:
        return "no op nodes to compare"
    bad = next((d for d in diffs if not d.ok), None)
    if bad is None:
        worst = max(diffs, key=lambda d: d.error / (d.scale or 1.0))
        return (f"all {len(diffs)} nodes agree (worst: {worst.name} ({worst.node.target}), "
                f"max|diff| {worst.error:.3g} at max|value| {worst.scale:.3g})")
    n = bad.node
    ok = len(diffs) - 1
    inputs = ", ".join(f"%{i}" for i in n.inputs)
    diag = Diagnostic("E0501", f"TVM and PyTorch diverge first at node '{bad.name}' ({n.target}): "
                      f"max|diff| {bad.error:.3g} at max|value| {bad.scale:.3g}", n.span,
                      label=f"{n.target}({inputs})",
                      notes=[Note(s, "fused from here") for s in n.origin])
    text = diag.render(spec.sources)
    return text.replace("error[E0501]", "divergence", 1) + f"\n{ok} earlier node(s) agree"
