"""Run a plan's steps on tensors (torch, imported by the caller's code path only).

Each step reads its source tensors through `get` (memory-mapped views), and returns new tensors one step at a
time, so a conversion holds at most one step's results besides the mapped file."""
from __future__ import annotations

from typing import Callable, Iterator

from .plan import Plan, Step


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def run_import(step: Step, get: Callable, dtypes: list[str]) -> list:
    import torch

    r = step.rule
    ts = [get(n) for n in step.src]
    if r is None:
        return [ts[0].to(torch_dtype(dtypes[0]))]
    if r.stack:
        t = torch.stack(ts)
    elif r.concat is not None:
        t = torch.cat(ts, r.concat)
    else:
        t = ts[0]
    if r.transpose:
        t = t.transpose(-1, -2)
    if r.permute:
        t = t.permute(*r.permute)
    if r.shape is not None:
        t = t.reshape(step.dst_shapes[0])
    if r.split is not None:
        parts = list(t.split([s[r.split] for s in step.dst_shapes], dim=r.split))
    elif r.unstack:
        parts = list(t.unbind(0))
    else:
        parts = [t]
    return [p.to(torch_dtype(d)) for p, d in zip(parts, dtypes)]


def run_export(step: Step, get: Callable, dtypes: list[str]) -> list:
    import torch

    r = step.rule
    ts = [get(n) for n in step.dst]
    if r is None:
        return [ts[0].to(torch_dtype(dtypes[0]))]
    if r.unstack:
        t = torch.stack(ts)
    elif r.split is not None:
        t = torch.cat(ts, r.split)
    else:
        t = ts[0]
    if r.shape is not None:
        t = t.reshape((len(step.src_shapes), *step.src_shapes[0]) if r.stack else step.src_shapes[0])
    if r.permute:
        t = t.permute(*[r.permute.index(i) for i in range(len(r.permute))])
    if r.transpose:
        t = t.transpose(-1, -2)
    if r.stack:
        parts = list(t.unbind(0))
    elif r.concat is not None:
        parts = list(t.split([s[r.concat] for s in step.src_shapes], dim=r.concat))
    else:
        parts = [t]
    return [p.to(torch_dtype(d)) for p, d in zip(parts, dtypes)]


def produce(plan: Plan, get: Callable, direction: str) -> Iterator[tuple[str, object]]:
    """(name, tensor) for every tensor the plan writes, step by step (tied aliases are checked, not written)."""
    run = run_import if direction == "import" else run_export
    for step in plan.steps:
        names = step.dst if direction == "import" else step.src
        dtypes = [plan.out[n].dtype if n in plan.out else "float32" for n in names]
        outs = run(step, get, dtypes)
        if step.check_only:
            continue
        for n, t in zip(names, outs):
            yield n, t
            del t
        del outs
