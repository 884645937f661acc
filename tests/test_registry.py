"""Tests generated from the op registry: every op proves its own rules on its own examples.

For each op in `specc.ops.all_ops()` and each of its `OpDef.examples`, a one-op module is built and
  * the shape rule's type is the PyTorch rule's actual output shape and dtype;
  * the PyTorch rule's output is the NumPy reference's (same random parameters copied into both);
  * the TVM rule's output is both of those (one compiled module per op: all its examples side by side);
and every op has every rule in `registry.RULES` or a waiver naming it with a reason. A failure names the op, the
example and the rule, e.g. "op 'layernorm' example 0: PyTorch rule differs from the NumPy reference".

References describe eval-mode semantics (dropout is the identity, batchnorm uses its running statistics).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specc.ir import Graph, Module, Node
from specc.ops import all_ops
from specc.ops.registry import RULES, Example, OpDef
from specc.printer import parse_type
from specc.types import DTYPES, TensorType, TupleType

# conv1d's even-kernel padding="same" example makes PyTorch say it copies the input: expected, not a problem
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

OPS = all_ops()
RTOL = 3e-5  # of the largest |reference| value: float32 against float64 references


def _cases() -> list[tuple[str, int]]:
    return [(name, i) for name, op in sorted(OPS.items()) for i in range(len(op.examples))]


def _leaves(ty, value=None):
    """(path, type) of every tensor in a (nested) tuple type; with `value`, (path, array) of the matching value."""
    if isinstance(ty, TupleType):
        out = []
        for i, t in enumerate(ty.items):
            out += [((i, *p), v) for p, v in _leaves(t, None if value is None else value[i])]
        return out
    return [((), ty if value is None else value)]


# ---- one-op modules --------------------------------------------------------------------------------------------

def one_op_module(name: str, examples: tuple[Example, ...] | list[Example]) -> Module:
    """A model graph with one `name` node per example (node e<j>, inputs x<j>_<k>), every result leaf an output."""
    op = OPS[name]
    g = Graph(name=f"Test_{name}", block=f"Test_{name}")
    for j, ex in enumerate(examples):
        ins = []
        for k, text in enumerate(ex.inputs):
            ins.append(g.add(Node(name=f"x{j}_{k}", kind="input", type=parse_type(text))).name)
        attrs = op.attrs(**ex.attrs)
        ty = op.infer([g[i].type for i in ins], attrs)
        g.add(Node(name=f"e{j}", kind="op", target=name, inputs=tuple(ins), attrs=attrs, type=ty))
        for path, leaf in _leaves(ty):
            src = f"e{j}"
            for depth in range(len(path)):
                item = f"{src}_{path[depth]}"
                if item not in g:
                    sub = g[src].type.items[path[depth]]
                    g.add(Node(name=item, kind="op", target="getitem", inputs=(src,),
                               attrs=OPS["getitem"].attrs(index=path[depth]), type=sub))
                src = item
            g.add(Node(name=f"y{j}" + "".join(f"_{p}" for p in path), kind="output", inputs=(src,), type=leaf))
    return Module(name=g.name, graphs={g.name: g}, main=g.name, path="registry_test.nn")


def _rng(name: str, j: int) -> np.random.Generator:
    return np.random.default_rng([sum(map(ord, name)), j])


def _inputs(ex: Example, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for text in ex.inputs:
        ty = parse_type(text)
        out.append(_array(ty, rng))
    return out


def _array(ty, rng: np.random.Generator):
    if isinstance(ty, TupleType):
        return tuple(_array(t, rng) for t in ty.items)
    assert isinstance(ty, TensorType) and all(isinstance(d, int) for d in ty.shape), f"examples are concrete: {ty}"
    dtype = np.dtype(DTYPES[ty.dtype])
    if dtype.kind in "iu":
        return rng.integers(0, 4, ty.shape).astype(dtype)  # token ids: examples have >= 4 embeddings
    if dtype == np.bool_:
        return rng.random(ty.shape) < 0.7
    return rng.standard_normal(ty.shape).astype(dtype)


def _params(op: OpDef, ex: Example, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random parameters and buffers by the names OpDef.params/buffers give (variances positive)."""
    ins = [parse_type(t) for t in ex.inputs]
    attrs = op.attrs(**ex.attrs)
    shapes = {**op.param_shapes(ins, attrs), **op.buffer_shapes(ins, attrs)}
    out = {}
    for pname, shape in shapes.items():
        if "var" in pname:
            out[pname] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            out[pname] = (rng.standard_normal(shape) * 0.5).astype(np.float32)
    return out


def _torch_model(module: Module):
    from specc.backends.torch import load_source
    from specc.backends.torch.emit import emit_module_source
    from specc.naming import class_name

    source = emit_module_source(module, source_name="registry_test.nn")
    mod = load_source(source, class_name(module.name))
    return getattr(mod, class_name(module.name))().eval(), source


def _load_params(model, j: int, params: dict[str, np.ndarray], op: OpDef, ex: Example) -> None:
    """Copy params into the module that example j's node owns: state_dict key e<j>.<name>, or <name> itself for
    a fused op, whose names carry the absorbed layers' attribute names. Every parameter OpDef.params names must be
    there; buffers may be missing (non-persistent ones, like the sinusoidal table)."""
    import torch

    state = model.state_dict()
    mine = {k: k.split(".", 1)[1] for k in state if k.split(".")[0] == f"e{j}"}
    mine.update({k: k for k in state if k in params})
    wanted = op.param_shapes([parse_type(t) for t in ex.inputs], op.attrs(**ex.attrs))
    assert set(wanted) <= set(mine.values()) <= set(params), \
        f"state_dict {sorted(mine)} vs OpDef.params {sorted(wanted)} and buffers {sorted(set(params) - set(wanted))}"
    with torch.no_grad():
        for key, pname in mine.items():
            state[key].copy_(torch.as_tensor(np.asarray(params[pname])))


def _torch_args(arrays):
    import torch

    if isinstance(arrays, tuple):
        return tuple(_torch_args(a) for a in arrays)
    return torch.from_numpy(np.ascontiguousarray(arrays))


def _flat(value) -> list:
    if isinstance(value, (tuple, list)):
        return [leaf for v in value for leaf in _flat(v)]
    return [value]


def _close(got: np.ndarray, want: np.ndarray) -> str | None:
    """None if `got` matches `want`: same NaNs, same infinities, finite values within RTOL of the largest |want|."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"shape {got.shape} vs {want.shape}"
    if got.dtype.kind in "iub" or want.dtype.kind in "iub":
        return None if np.array_equal(got, want) else "integer values differ"
    g, w = got.astype(np.float64), want.astype(np.float64)
    if not np.array_equal(np.isnan(g), np.isnan(w)):
        return "NaN in one result and not the other"
    inf = np.isinf(g) | np.isinf(w)
    if not np.array_equal(g[inf], w[inf]):
        return "infinities differ"
    fin = ~(np.isnan(w) | inf)
    if not fin.any():
        return None
    scale = max(float(np.abs(w[fin]).max()), 1e-30)
    worst = float(np.abs(g[fin] - w[fin]).max())
    return None if worst <= RTOL * scale else f"max abs diff {worst:.3g} = {worst / scale:.2g} of max |ref| {scale:.3g}"


# ---- completeness ---------------------------------------------------------------------------------------------

def missing_rules(name: str, op: OpDef, tvm_loaded: bool) -> list[str]:
    """What op `name` lacks: one line per rule neither present nor waived (and per waiver that is not needed)."""
    have = {"examples": bool(op.examples), "torch": op.torch is not None, "numpy": op.numpy is not None,
            "macs": op.macs is not None}
    if tvm_loaded:
        have["tvm"] = op.tvm is not None
    words = {"examples": "no examples", "torch": "no PyTorch rule", "numpy": "no numpy reference",
             "tvm": "no TVM rule", "macs": "no macs rule"}
    out = []
    for rule, present in have.items():
        reason = op.waive.get(rule)
        if not present and not reason:
            out.append(f"op {name!r}: {words[rule]} and no waiver")
        if present and rule in op.waive:
            out.append(f"op {name!r}: has a {rule} rule but also waives it ({op.waive[rule]!r})")
    for rule, reason in op.waive.items():
        if rule not in RULES:
            out.append(f"op {name!r}: waiver for unknown rule {rule!r} (rules: {', '.join(RULES)})")
        elif not isinstance(reason, str) or len(reason.strip()) < 8:
            out.append(f"op {name!r}: waiver of {rule!r} gives no reason")
    return out


def test_every_op_has_every_rule_or_a_waiver():
    problems = [line for name, op in sorted(OPS.items()) for line in missing_rules(name, op, tvm_loaded=False)]
    assert not problems, "\n".join(problems)


def test_every_op_has_a_tvm_rule_or_a_waiver():
    pytest.importorskip("tvm")
    from specc.backends.tvm.rules import load_rules

    load_rules()
    problems = [line for name, op in sorted(OPS.items()) for line in missing_rules(name, op, tvm_loaded=True)
                if "TVM" in line or "tvm" in line]
    assert not problems, "\n".join(problems)


def test_examples_are_valid_and_concrete():
    """Each example's attributes validate against the schema and its input types check, with concrete shapes."""
    problems = []
    for name, op in sorted(OPS.items()):
        for j, ex in enumerate(op.examples):
            try:
                ins = [parse_type(t) for t in ex.inputs]
                if not op.arity[0] <= len(ins) <= (op.arity[1] or len(ins)):
                    raise ValueError(f"{len(ins)} inputs, arity {op.arity}")
                ty = op.infer(ins, op.attrs(**ex.attrs))
                for _, leaf in _leaves(ty):
                    if not all(isinstance(d, int) for d in leaf.shape):
                        raise ValueError(f"result {leaf} is not concrete")
            except Exception as e:  # noqa: BLE001 - every failure is reported with its op and example
                problems.append(f"op {name!r} example {j} {ex}: {type(e).__name__}: {e}")
    assert not problems, "\n".join(problems)


# ---- differential tests: shape rule vs PyTorch vs NumPy --------------------------------------------------------

# Each example runs twice: with unit-scale values, and with float inputs x 1e-2 and variances x 1e-4, where
# constants such as a norm's eps decide the result (a wrong eps is invisible at unit scale).
MAGNITUDES = (1.0, 1e-2)


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.examples and "torch" not in op.waive))
def test_torch_rule_matches_shape_rule_and_numpy(name):
    torch = pytest.importorskip("torch")
    op = OPS[name]
    module = one_op_module(name, op.examples)
    model, source = _torch_model(module)
    problems = []
    for j, ex in enumerate(op.examples):
        for mag in MAGNITUDES:
            rng = _rng(name, j)
            xs = [_scaled(x, mag) for x in _inputs(ex, rng)]
            params = {k: v * mag * mag if "var" in k else v for k, v in _params(op, ex, rng).items()}
            _load_params(model, j, params, op, ex)
            with torch.no_grad():  # the other examples' nodes run on their own inputs
                outs = model(*_feeds(module, op.examples, j, xs))
            outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
            got = [o for n, o in zip(module.graph.outputs, outs) if n == f"y{j}" or n.startswith(f"y{j}_")]
            problems += _compare(name, op, ex, j, mag, module.graph[f"e{j}"].type, xs, params, got)
    assert not problems, "\n".join(problems) + "\n--- emitted source ---\n" + source


def _scaled(x, mag: float):
    if isinstance(x, tuple):
        return tuple(_scaled(v, mag) for v in x)
    return x * np.asarray(mag, x.dtype) if x.dtype.kind == "f" else x


def _compare(name: str, op: OpDef, ex: Example, j: int, mag: float, ty, xs, params, got) -> list[str]:
    """Problems of example j: PyTorch's result leaves `got` against the shape rule's type `ty` and the reference."""
    import torch

    where = f"op {name!r} example {j}" + ("" if mag == 1.0 else f" (inputs x {mag:g})")
    problems = []
    leaves = _leaves(ty)
    for (path, leaf), value in zip(leaves, got):
        want_dtype = getattr(torch, DTYPES[leaf.dtype])
        if tuple(value.shape) != tuple(leaf.shape) or value.dtype != want_dtype:
            problems.append(f"{where} output {path}: shape rule says {leaf}, PyTorch rule gives "
                            f"{list(value.shape)} {value.dtype}")
    if op.numpy is None or problems:
        return problems
    refs = [v for _, v in _leaves(ty, op.numpy(xs, op.attrs(**ex.attrs), params))]
    for (path, _), value, want in zip(leaves, got, refs):
        msg = _close(value.detach().numpy(), want)
        if msg:
            problems.append(f"{where} output {path}: PyTorch rule differs from the NumPy reference: {msg}")
    return problems


def _feeds(module: Module, examples, j: int, xs: list) -> list:
    """Inputs for every example's nodes: example j gets xs, the others their own seeded random inputs."""
    feeds = []
    for i, ex in enumerate(examples):
        arrays = xs if i == j else _inputs(ex, _rng("other", i))
        feeds += [_torch_args(a) for a in arrays]
    return feeds


# ---- TVM -------------------------------------------------------------------------------------------------------

@pytest.mark.tvm
@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items()
                                        if op.examples and not {"tvm", "torch"} & set(op.waive)))
def test_tvm_rule_matches_torch_and_numpy(name):
    pytest.importorskip("tvm")
    torch = pytest.importorskip("torch")
    from specc.backends.tvm import TVMModel, resolve_target
    from specc.backends.tvm.codegen import compile_module
    from specc.backends.tvm.lower import lower

    op = OPS[name]
    target = resolve_target("tvm-cpu")
    examples = _tvm_examples(name, target)
    module = one_op_module(name, examples)
    model, _ = _torch_model(module)
    params = []
    for j, ex in enumerate(examples):
        p = _params(op, ex, _rng(name, j))
        _load_params(model, j, p, op, ex)
        params.append(p)
    lowered = lower(module, target)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    weights = {k: state[k] for k in lowered.weights}
    ex_, stats = compile_module(lowered, weights, target)
    run = TVMModel(ex_, lowered, target, weights, stats, module.name)
    feeds = [a for i, ex in enumerate(examples) for a in _inputs(ex, _rng("tvm", i))]
    got = _flat(run(*feeds))
    with torch.no_grad():
        want = _flat(model(*[_torch_args(a) for a in feeds]))
    problems = []
    at = 0
    for j, ex in enumerate(examples):
        xs = feeds[at:at + len(ex.inputs)]
        at += len(ex.inputs)
        ty = module.graph[f"e{j}"].type
        refs = [v for _, v in _leaves(ty, op.numpy(xs, op.attrs(**ex.attrs), params[j]))] if op.numpy else []
        for k, (path, _) in enumerate(_leaves(ty)):
            idx = [n for n in module.graph.outputs].index(f"y{j}" + "".join(f"_{p}" for p in path))
            g = np.asarray(got[idx].numpy() if hasattr(got[idx], "numpy") else got[idx])
            msg = _close(g, want[idx].detach().numpy())
            if msg:
                problems.append(f"op {name!r} example {j} output {path}: TVM rule differs from the PyTorch rule: {msg}")
            if refs:
                msg = _close(g, refs[k])
                if msg:
                    problems.append(f"op {name!r} example {j} output {path}: TVM rule differs from the NumPy "
                                    f"reference: {msg}")
    assert not problems, "\n".join(problems)


def _tvm_examples(name: str, target) -> list[Example]:
    """The op's examples that the TVM rule's own `check` accepts (a refused one is a located E0501 for users, see
    rules/__init__.py); at least one must be accepted."""
    from specc.backends.tvm.rules import load_rules

    load_rules()
    op = OPS[name]
    check = getattr(op.tvm, "check", None)
    if check is None:
        return list(op.examples)
    module = one_op_module(name, op.examples)
    keep = []
    for j, ex in enumerate(op.examples):
        node = module.graph[f"e{j}"]
        if check(node, [module.graph[i].type for i in node.inputs], target) is None:
            keep.append(ex)
    assert keep, f"op {name!r}: the TVM rule refuses every example ({check.__name__})"
    return keep


# ---- property tests: conv and pool output sizes against PyTorch ------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2),
       nd=st.sampled_from([1, 2]))
def test_conv_output_size_matches_pytorch(size, k, s, p, d, nd):
    torch = pytest.importorskip("torch")
    from specc.diagnostics import ShapeError

    op = OPS[f"conv{nd}d"]
    ty = TensorType("f32", (1, 2) + (size,) * nd)
    conv = getattr(torch.nn.functional, f"conv{nd}d")
    x = torch.zeros((1, 2) + (size,) * nd)
    w = torch.zeros((3, 2) + (k,) * nd)
    try:
        want = tuple(conv(x, w, stride=s, padding=p, dilation=d).shape)
    except RuntimeError:
        want = None
    try:
        got = tuple(op.infer([ty], op.attrs(out_channels=3, kernel_size=k, stride=s, padding=p, dilation=d)).shape)
    except ShapeError:
        got = None
    assert got == want, f"conv{nd}d size={size} k={k} s={s} p={p} d={d}: shape rule {got}, PyTorch {want}"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2),
       ceil=st.booleans(), kind=st.sampled_from(["max", "avg"]), nd=st.sampled_from([1, 2]))
def test_pool_output_size_matches_pytorch(size, k, s, p, ceil, kind, nd):
    torch = pytest.importorskip("torch")
    from specc.diagnostics import ShapeError

    op = OPS[f"{kind}pool{nd}d"]
    ty = TensorType("f32", (1, 2) + (size,) * nd)
    pool = getattr(torch.nn.functional, f"{kind}_pool{nd}d")
    try:
        want = tuple(pool(torch.zeros((1, 2) + (size,) * nd), k, stride=s, padding=p, ceil_mode=ceil).shape)
    except RuntimeError:
        want = None
    try:
        got = tuple(op.infer([ty], op.attrs(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)).shape)
    except ShapeError:
        got = None
    assert got == want, f"{kind}pool{nd}d size={size} k={k} s={s} p={p} ceil={ceil}: shape rule {got}, PyTorch {want}"


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 12), out=st.integers(1, 6), kind=st.sampled_from(["avg", "max"]),
       nd=st.sampled_from([1, 2]))
def test_adaptive_pool_output_size_matches_pytorch(size, out, kind, nd):
    torch = pytest.importorskip("torch")
    from specc.diagnostics import ShapeError

    op = OPS[f"adaptive_{kind}pool{nd}d"]
    ty = TensorType("f32", (1, 2) + (size,) * nd)
    pool = getattr(torch.nn.functional, f"adaptive_{kind}_pool{nd}d")
    try:
        want = tuple(pool(torch.zeros((1, 2) + (size,) * nd), out).shape)
    except RuntimeError:
        want = None
    try:
        got = tuple(op.infer([ty], op.attrs(output_size=out)).shape)
    except ShapeError:
        got = None
    assert got == want
