"""Which checkpoint tensors become which model tensors, from names and shapes only (no data is read, no torch).

A plan is a list of Steps, each one rule applied to one binding of its indices; the report lists everything that
did not fit. Import and export plans use the same Step: `src` are checkpoint names, `dst` model names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .maps import Rule, WeightMap
from .report import MappingReport, WeightsError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TensorInfo:
    shape: Shape
    dtype: str  # torch's name without "torch.": float32, bfloat16, int64


@dataclass
class Step:
    rule: Rule | None  # None: a plain copy (identity map)
    src: list[str]      # checkpoint names (stack: one per index, in order)
    dst: list[str]      # model names (unstack: one per index, in order)
    src_shapes: list[Shape] = field(default_factory=list)
    dst_shapes: list[Shape] = field(default_factory=list)
    check_only: bool = False  # the model tensor is an alias (tied): compare with its owner, write nothing

    def describe(self) -> str:
        r = self.rule
        if r is None:
            return ""
        how = []
        if r.stack:
            how.append(f"stack {{{r.stack}}}")
        if r.concat is not None:
            how.append(f"concat dim {r.concat}")
        if r.transpose:
            how.append("transpose")
        if r.permute:
            how.append(f"permute {list(r.permute)}")
        if r.shape is not None:
            how.append("reshape")
        if r.split is not None:
            how.append(f"split dim {r.split}")
        if r.unstack:
            how.append(f"unstack {{{r.unstack}}}")
        return ", ".join(how)


@dataclass
class Plan:
    steps: list[Step]
    report: MappingReport
    out: dict[str, TensorInfo]  # what the steps write, by name, in order


# ---- shape arithmetic (import direction; export runs it backwards) ------------------------------------------

def forward_shapes(rule: Rule | None, src: list[Shape], want: list[Shape]) -> list[Shape] | str:
    """The model shapes a rule makes from checkpoint shapes, or why it cannot."""
    if rule is None:
        return list(src)
    if rule.stack:
        if any(s != src[0] for s in src):
            return f"stacked tensors differ in shape: {sorted(set(src))}"
        s = (len(src), *src[0])
    elif rule.concat is not None:
        d = rule.concat
        base = [tuple(x[:d]) + tuple(x[d + 1:]) if len(x) > d else None for x in src]
        if any(b is None or b != base[0] for b in base):
            return f"cannot concatenate shapes {src} along dim {d}"
        s = (*src[0][:d], sum(x[d] for x in src), *src[0][d + 1:])
    else:
        s = src[0]
    if rule.transpose:
        if len(s) < 2:
            return f"cannot transpose a tensor of shape {list(s)}"
        s = (*s[:-2], s[-1], s[-2])
    if rule.permute:
        if len(s) != len(rule.permute):
            return f"permute {list(rule.permute)} on a tensor of rank {len(s)}"
        s = tuple(s[i] for i in rule.permute)
    if rule.shape is not None:
        if math.prod(s) != math.prod(want[0]):
            return f"cannot reshape {list(s)} ({math.prod(s)} values) to {list(want[0])}"
        return [tuple(want[0])]
    if rule.split is not None:
        d = rule.split
        if len(s) <= d or any(len(w) != len(s) for w in want) or sum(w[d] for w in want) != s[d]:
            return f"cannot split {list(s)} along dim {d} into {[list(w) for w in want]}"
        return [(*s[:d], w[d], *s[d + 1:]) for w in want]
    if rule.unstack:
        return [tuple(s[1:])] * s[0] if s else "cannot unstack a scalar"
    return [s]


def resolve_shape(rule: Rule, numel: int, hparams: dict[str, Any]) -> Shape:
    """The checkpoint-side shape of a `shape = [...]` rule: -1 inferred, hyper-parameter names looked up."""
    dims = []
    for d in rule.shape or ():
        if isinstance(d, str):
            if d not in hparams or not isinstance(hparams[d], int):
                raise WeightsError(f"{rule.where}: shape entry {d!r} is not an integer hyper-parameter of the spec")
            d = hparams[d]
        dims.append(int(d))
    if dims.count(-1) == 1:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = numel // known if known else 0
    if math.prod(dims) != numel:
        raise WeightsError(f"{rule.where}: shape {list(rule.shape or ())} does not hold {numel} values")
    return tuple(dims)


# ---- import --------------------------------------------------------------------------------------------------

def plan_import(wmap: WeightMap, ckpt: dict[str, TensorInfo], model: dict[str, TensorInfo],
                aliases: dict[str, str], source: str = "checkpoint", target: str = "model") -> Plan:
    """Match every checkpoint tensor to a rule (the first whose pattern matches), bind indices, check shapes."""
    report = MappingReport(source, target, source_names=list(ckpt), target_names=list(model))
    steps: list[Step] = []
    if not wmap.rules:  # identity
        groups = [(None, {}, [n], [n]) for n in ckpt]
    else:
        groups = _group_import(wmap, ckpt, report)
    filled: set[str] = set()
    for rule, _env, src, dst in groups:
        shapes_in = [ckpt[s].shape for s in src]
        dst_real = [aliases.get(d, d) for d in dst]
        missing = [d for d in dst_real if d not in model]
        if missing:
            for s in src:
                report.unused.append((s, f"maps to {missing[0]}, which the model does not have"))
            continue
        want = [model[d].shape for d in dst_real]
        got = forward_shapes(rule, shapes_in, want)
        if isinstance(got, str):
            report.shapes.append((", ".join(src), ", ".join(dst), shapes_in[0], want[0], got))
            filled.update(dst_real)  # reported as a mismatch, not again as unfilled
            continue
        bad = [(d, g, w) for d, g, w in zip(dst, got, want) if tuple(g) != tuple(w)]
        if len(got) != len(want) or bad:
            d, g, w = bad[0] if bad else (dst[0], got[0], want[0])
            how = f"gives {list(g)}" if tuple(g) != tuple(shapes_in[0]) else ""
            report.shapes.append((", ".join(src), d, shapes_in[0], tuple(w), how))
            filled.update(dst_real)
            continue
        # a tied alias of the model, or a tensor a checkpoint stores twice (T5's shared and encoder.embed_tokens)
        check_only = all(d in aliases or d in filled for d in dst)
        steps.append(Step(rule, src, dst_real, shapes_in, want, check_only=check_only))
        if check_only:
            report.tied.extend((s, d) for s, d in zip(src, dst_real))
        else:
            filled.update(dst_real)
            report.mapped.append((src, dst_real, steps[-1].describe()))
    report.unfilled = [n for n in model if n not in filled]
    # a tied pair checked against its owner only once the owner is written
    steps.sort(key=lambda s: s.check_only)
    out = {d: model[d] for s in steps if not s.check_only for d in s.dst}
    return Plan(steps, report, out)


def _candidates(wmap: WeightMap, name: str) -> list[str]:
    out = [name]
    for p in wmap.prefix:
        if p and name.startswith(p):
            out.append(name[len(p):])
    return out


def _group_import(wmap: WeightMap, ckpt: dict[str, TensorInfo], report: MappingReport):
    """(rule, env, src names, dst names) per rule binding; checkpoint tensors no rule takes go to report.unused."""
    groups: dict[tuple, dict] = {}
    for name in ckpt:
        if wmap.ignored(name):
            continue
        hit = None
        for ri, rule in enumerate(wmap.rules):
            for pi, pat in enumerate(rule.src):
                for cand in _candidates(wmap, name):
                    env = pat.match(cand)
                    if env is not None:
                        hit = (ri, pi, env, name[: len(name) - len(cand)])
                        break
                if hit:
                    break
            if hit:
                break
        if hit is None:
            report.unused.append((name, "no rule of the map matches it"))
            continue
        ri, pi, env, prefix = hit
        rule = wmap.rules[ri]
        key_env = {k: v for k, v in env.items() if k != rule.stack}
        key = (ri, prefix, tuple(sorted(key_env.items())))
        g = groups.setdefault(key, {"members": {}, "env": key_env})
        g["members"][(pi, env.get(rule.stack, 0) if rule.stack else 0)] = name
    out = []
    for (ri, prefix, _), g in groups.items():
        rule = wmap.rules[ri]
        env, members = g["env"], g["members"]
        if rule.stack:
            idx = sorted(k for _, k in members)
            if idx != list(range(len(idx))):
                for n in members.values():
                    report.unused.append((n, f"{{{rule.stack}}} runs {idx}, not 0..{len(idx) - 1}"))
                continue
            src = [members[(0, k)] for k in idx]
        else:
            src = [members.get((pi, 0)) or prefix + p.format(env) for pi, p in enumerate(rule.src)]
            absent = [s for s in src if s not in ckpt]
            if absent:
                for n in members.values():
                    report.unused.append((n, f"its rule also needs {absent[0]}, which the checkpoint lacks"))
                continue
        if rule.unstack:
            n = ckpt[src[0]].shape[0] if ckpt[src[0]].shape else 0
            dst = [rule.dst[0].format({**env, rule.unstack: k}) for k in range(n)]
        else:
            dst = [p.format(env) for p in rule.dst]
        out.append((rule, env, src, dst))
    return out


# ---- export --------------------------------------------------------------------------------------------------

def plan_export(wmap: WeightMap, model: dict[str, TensorInfo], aliases: dict[str, str], hparams: dict[str, Any],
                dtype: str | None = None, source: str = "weights", target: str = "checkpoint") -> Plan:
    """Every model tensor through the rule whose model pattern matches it, backwards. Aliases are not written."""
    report = MappingReport(source, target, source_names=list(model), target_names=[])
    steps: list[Step] = []
    out: dict[str, TensorInfo] = {}
    if not wmap.rules:
        for n, info in model.items():
            steps.append(Step(None, [n], [n], [info.shape], [info.shape]))
            out[n] = TensorInfo(info.shape, dtype or info.dtype)
            report.mapped.append(([n], [n], ""))
        return Plan(steps, report, out)
    groups: dict[tuple, dict] = {}
    for name in model:
        hit = _first_model_match(wmap, name)
        if hit is None:
            report.unused.append((name, "no rule of the map produces it"))
            continue
        ri, pi, env = hit
        rule = wmap.rules[ri]
        key_env = {k: v for k, v in env.items() if k != rule.unstack}
        g = groups.setdefault((ri, tuple(sorted(key_env.items()))), {"env": key_env, "members": {}})
        g["members"][(pi, env.get(rule.unstack, 0) if rule.unstack else 0)] = name
    for (ri, _), g in groups.items():
        rule, env, members = wmap.rules[ri], g["env"], g["members"]
        if rule.unstack:
            idx = sorted(k for _, k in members)
            dst = [members[(0, k)] for k in idx]
        else:
            dst = [members.get((pi, 0)) or p.format(env) for pi, p in enumerate(rule.dst)]
            absent = [d for d in dst if d not in model]
            if absent:
                for n in members.values():
                    report.unused.append((n, f"its rule also needs {absent[0]}, which the model lacks"))
                continue
        dshapes = [model[d].shape for d in dst]
        try:
            sshapes = backward_shapes(rule, dshapes, hparams)
        except WeightsError as e:
            report.unused.extend((d, str(e)) for d in dst)
            continue
        if rule.stack:
            src = [rule.src[0].format({**env, rule.stack: k}) for k in range(len(sshapes))]
        else:
            src = [wmap.export_prefix + p.format(env) for p in rule.src]
        if rule.stack:
            src = [wmap.export_prefix + s for s in src]
        steps.append(Step(rule, src, dst, sshapes, dshapes))
        for s, shp in zip(src, sshapes):
            out[s] = TensorInfo(shp, dtype or rule.dtype or model[dst[0]].dtype)
        report.mapped.append((dst, src, steps[-1].describe()))
    report.target_names = list(out)
    return Plan(steps, report, out)


def _first_model_match(wmap: WeightMap, name: str) -> tuple[int, int, dict] | None:
    """(rule index, model-pattern index, bindings) of the first rule whose model side produces `name`."""
    for ri, rule in enumerate(wmap.rules):
        for pi, pat in enumerate(rule.dst):
            env = pat.match(name)
            if env is not None:
                return ri, pi, env
    return None


def backward_shapes(rule: Rule, dst: list[Shape], hparams: dict[str, Any]) -> list[Shape]:
    """The checkpoint shapes a rule's inverse makes from model shapes."""
    if rule.unstack:
        s = (len(dst), *dst[0])
    elif rule.split is not None:
        d = rule.split
        s = (*dst[0][:d], sum(x[d] for x in dst), *dst[0][d + 1:])
    else:
        s = dst[0]
    if rule.shape is not None:
        s = resolve_shape(rule, math.prod(s), hparams)
    if rule.permute:
        inv = [rule.permute.index(i) for i in range(len(rule.permute))]
        s = tuple(s[i] for i in inv)
    if rule.transpose:
        s = (*s[:-2], s[-1], s[-2])
    if rule.stack:
        return [tuple(s[1:])] * s[0]
    if rule.concat is not None:
        d, n = rule.concat, len(rule.src)
        if s[d] % n:
            raise WeightsError(f"{rule.where}: cannot split dim {d} of {list(s)} into {n} equal parts")
        return [(*s[:d], s[d] // n, *s[d + 1:])] * n
    return [s]
