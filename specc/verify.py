"""The IR verifier (torch.fx `lint()` style): names the bad node and says what is wrong."""
from __future__ import annotations

import networkx as nx

from .ir import Graph, Module
from .ops import registry
from .ops.context import shape_context
from .types import ErrorType, TensorType, TupleType


class VerifyError(AssertionError):
    pass


def verify_graph(m: Module, g: Graph, retype: bool = True) -> list[str]:
    problems: list[str] = []
    where = f"graph {g.name}"
    if not nx.is_directed_acyclic_graph(g.g):
        problems.append(f"{where}: has a cycle: {nx.find_cycle(g.g)}")
        return problems
    for n in g.nodes():
        at = f"{where}: node %{n.name}"
        if n.name != g.g.nodes[n.name]["node"].name:
            problems.append(f"{at}: key and record name differ")
        if not isinstance(n.type, (TensorType, TupleType)) or isinstance(n.type, ErrorType):
            problems.append(f"{at}: has no valid type ({n.type})")
        for i in n.inputs:
            if i not in g:
                problems.append(f"{at}: reads undefined value %{i}")
        if n.kind == "input" and n.inputs:
            problems.append(f"{at}: an input has operands")
        if n.kind == "output" and len(n.inputs) != 1:
            problems.append(f"{at}: an output has {len(n.inputs)} operands")
        if n.kind == "op":
            op = registry.get(n.target)
            if op is None:
                problems.append(f"{at}: unknown op {n.target!r}")
                continue
            if not isinstance(n.attrs, op.attrs):
                problems.append(f"{at}: attrs are {type(n.attrs).__name__}, {n.target} needs {op.attrs.__name__}")
                continue
            lo, hi = op.arity
            if not lo <= len(n.inputs) <= (hi if hi is not None else len(n.inputs)):
                problems.append(f"{at}: {n.target} takes {lo}..{hi} inputs, has {len(n.inputs)}")
                continue
            missing = [u.graph for u in op.graph_uses(n.attrs) if u.graph not in m.graphs]
            if missing:
                problems.append(f"{at}: {n.target} names unknown graph(s) {', '.join(missing)}")
                continue
            if retype and all(i in g for i in n.inputs):
                try:
                    t = op.infer([g[i].type for i in n.inputs], n.attrs)
                except Exception as e:  # noqa: BLE001 - report any failure of the rule
                    problems.append(f"{at}: shape rule fails: {e}")
                    continue
                if t != n.type:
                    problems.append(f"{at}: stale type {n.type}, the rule gives {t}")
        if n.kind in ("call", "repeat"):
            if n.target not in m.graphs:
                problems.append(f"{at}: calls unknown graph {n.target!r}")
                continue
            callee = m.graphs[n.target]
            want = len(callee.inputs)
            if len(n.inputs) != want:
                problems.append(f"{at}: passes {len(n.inputs)} inputs, {n.target} takes {want}")
            for i, ci in zip(n.inputs, callee.inputs):
                if i in g and g[i].type != callee[ci].type:
                    problems.append(f"{at}: input %{i} is {g[i].type}, {n.target} expects {callee[ci].type}")
    return problems


def verify(m: Module) -> None:
    """Raise VerifyError listing every problem in every graph."""
    problems = []
    if m.main not in m.graphs:
        problems.append(f"main graph {m.main!r} is missing")
    with shape_context(graphs=m.graphs):  # shape rules of ops that name subgraphs (moe) read them
        for g in m.graphs.values():
            problems += verify_graph(m, g)
    if problems:
        raise VerifyError("IR verification failed:\n  " + "\n  ".join(problems))
