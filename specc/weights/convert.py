"""Import a checkpoint into a spec's layout, export it back, load weights into a built module."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import Layout, model_layout, module_layout
from .maps import WeightMap, find_map, identity_map, maps_for
from .plan import Plan, plan_export, plan_import
from .readers import Checkpoint, open_checkpoint
from .report import MappingReport, WeightsError
from .transforms import produce, run_import
from .writer import write_safetensors

SPECC_FORMAT = "specc"


@dataclass
class ImportResult:
    spec: Any                   # the Spec the weights were mapped into
    map: WeightMap
    report: MappingReport
    from_config: dict[str, Any]  # hyper-parameters config.json set (also stored in the output's metadata)
    output: Path | None = None


def is_specc_layout(ckpt: Checkpoint) -> bool:
    return ckpt.metadata.get("format_specc") == SPECC_FORMAT


def stored_overrides(path: str | Path) -> dict[str, Any]:
    """The hyper-parameters a specc weights file was imported with (`specc compile --weights` applies them)."""
    with open_checkpoint(path) as ckpt:
        raw = ckpt.metadata.get("specc_hparams")
    try:
        return dict(json.loads(raw)) if raw else {}
    except (ValueError, TypeError):
        raise WeightsError(f"{path}: damaged specc metadata (specc_hparams)") from None


def choose_map(name: str | None, spec_path: Path | None, ckpt: Checkpoint) -> WeightMap:
    """`--map NAME`, else: the identity for specc's own files, else the map for this spec matching most names."""
    if name:
        return identity_map() if name == "identity" else find_map(name, spec_path)
    if is_specc_layout(ckpt) or spec_path is None:
        return identity_map()
    best, best_score = None, 0
    for m in maps_for(spec_path):
        score = sum(1 for n in ckpt.info if _matched(m, n))
        if score > best_score:
            best, best_score = m, score
    return best or identity_map()


def _matched(m: WeightMap, name: str) -> bool:
    cands = [name] + [name[len(p):] for p in m.prefix if p and name.startswith(p)]
    return any(p.match(c) is not None for r in m.rules for p in r.src for c in cands)


def _check_plan(plan: Plan) -> None:
    if not plan.report.ok:
        raise WeightsError(plan.report.problems())


def _tied_check(plan: Plan, get) -> None:
    """A checkpoint tensor mapped onto a tied alias must equal what its owner was filled with."""
    import torch

    producer = {d: s for s in plan.steps if not s.check_only for d in s.dst}
    for step in (s for s in plan.steps if s.check_only):
        outs = run_import(step, get, [plan.out[d].dtype for d in step.dst])
        for d, t in zip(step.dst, outs):
            owner = producer[d]
            ref = run_import(owner, get, [plan.out[x].dtype for x in owner.dst])[owner.dst.index(d)]
            if not torch.equal(t, ref):
                raise WeightsError(f"{plan.report.source}: {', '.join(step.src)} should equal the tensor it is tied "
                                   f"to ({d}: the model shares one weight), but the values differ")


def import_weights(spec, checkpoint: str | Path, output: str | Path | None, map: str | None = None, *,
                   overrides: dict[str, Any] | None = None, spec_path: str | Path | None = None,
                   into: str | None = None) -> ImportResult:
    """Convert a checkpoint to the spec's layout and write it to `output` (a .safetensors file), all or nothing.

    `spec`: a loaded Spec, or a function overrides -> Spec (then the checkpoint's config.json sets the
    hyper-parameters the map names, under `overrides`; `specc.api.import_weights` passes one). `into`: the name of
    a submodule (a model called as a block, `... as bert`): the checkpoint fills only it, through the map with every
    model name under `into.`, and the output holds only its tensors (the rest, a new head, is initialised fresh by
    `train.py --init-from`). Raises WeightsError listing every tensor that does not fit."""
    ckpt = open_checkpoint(checkpoint)
    with ckpt:
        if spec_path is None and not callable(spec) and spec.module.path:
            spec_path = spec.module.path
        wmap = choose_map(map, Path(spec_path) if spec_path else None, ckpt)
        wmap.check_config(ckpt.config, str(checkpoint))
        from_config = wmap.overrides(ckpt.config)
        if callable(spec):
            spec = spec({**from_config, **(overrides or {})})
        layout = model_layout(spec)
        target = f"model {spec.name}"
        if into:
            prefix = into.removesuffix(".") + "."
            part = layout.under(prefix)
            if not part.tensors:
                raise WeightsError(f"--into {into}: model {spec.name} has no submodule {into.removesuffix('.')!r} "
                                   f"with weights (it has: {', '.join(layout.submodules()) or 'none'})")
            wmap, layout, target = wmap.into(prefix), part, f"{target}.{prefix.removesuffix('.')}"
        plan = plan_import(wmap, ckpt.info, layout.tensors, layout.aliases, source=str(checkpoint), target=target)
        if not plan.report.ok:
            clash = [f"{k}={v!r} (config.json: {from_config[k]!r})" for k, v in (overrides or {}).items()
                     if k in from_config and from_config[k] != v]
            raise WeightsError(plan.report.problems() + (f"\nnote: map {wmap.name!r}; -D overrides config.json: "
                                                         + ", ".join(clash) if clash else f"\nnote: map {wmap.name!r}"))
        _tied_check(plan, ckpt.get)
        result = ImportResult(spec, wmap, plan.report, from_config)
        if output is not None:
            hp = {k: v for k, v in spec.module.hparams.items() if isinstance(v, (int, float, str, bool))}
            meta = {"format": "pt", "format_specc": SPECC_FORMAT, "specc_model": spec.name, "specc_map": wmap.name,
                    "specc_hparams": json.dumps(hp, sort_keys=True)}
            write_safetensors(Path(output), plan.out, produce(plan, ckpt.get, "import"), metadata=meta)
            result.output = Path(output)
        return result


def export_weights(spec, weights: str | Path, map: str, output: str | Path, *, dtype: str | None = None
                   ) -> MappingReport:
    """Write the map's own layout from specc weights: for Hugging Face maps, folder/config.json +
    folder/model.safetensors (what `from_pretrained(folder)` reads); otherwise folder/model.safetensors."""
    spec_path = Path(spec.module.path) if spec.module.path else None
    wmap = find_map(map, spec_path) if map != "identity" else identity_map()
    layout = model_layout(spec)
    ckpt = open_checkpoint(weights)
    with ckpt:
        check = plan_import(identity_map(), ckpt.info, layout.tensors, layout.aliases, source=str(weights),
                            target=f"model {spec.name}")
        check.report.unused = [(n, w) for n, w in check.report.unused if n not in layout.aliases]
        _check_plan(check)
        plan = plan_export(wmap, layout.tensors, layout.aliases, spec.module.hparams, dtype, source=f"model {spec.name}",
                           target=f"map {wmap.name}")
        if plan.report.unused:
            raise WeightsError(plan.report.problems())
        out = Path(output)
        files: dict[str, Any] = {"model.safetensors": None}
        if wmap.format == "huggingface":
            cfg = wmap.export_config(spec.module.hparams)
            cfg.setdefault("torch_dtype", dtype or "float32")
            files["config.json"] = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
        _commit_folder(out, files, lambda p: write_safetensors(p, plan.out, produce(plan, ckpt.get, "export"),
                                                               metadata={"format": "pt"}))
        return plan.report


def _commit_folder(out: Path, files: dict[str, Any], write_weights) -> None:
    """Write every file into a temporary folder beside `out`, then move them in: a failure leaves `out` as it was."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".specc-export.", dir=out))
    try:
        for name, text in files.items():
            if text is None:
                write_weights(tmp / name)
            else:
                (tmp / name).write_text(text, encoding="utf-8")
        for name in files:
            os.replace(tmp / name, out / name)
    finally:
        for p in tmp.glob("*"):
            p.unlink(missing_ok=True)
        tmp.rmdir()


# ---- into a built module -------------------------------------------------------------------------------------

def load_weights(module, path: str | Path, map: str | None = None, spec_path: str | Path | None = None
                 ) -> MappingReport:
    """Fill every tensor of a built module from a checkpoint (specc's layout, or any through `map`); strict:
    raises WeightsError listing unused, unfilled and mismatched tensors, and changes nothing then."""
    import torch

    layout = module_layout(module)
    with open_checkpoint(path) as ckpt:
        wmap = choose_map(map, Path(spec_path) if spec_path else None, ckpt)
        plan = plan_import(wmap, ckpt.info, layout.tensors, layout.aliases, source=str(path), target="the model")
        _check_plan(plan)
        _tied_check(plan, ckpt.get)
        state = module.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, t in produce(plan, ckpt.get, "import"):
                state[name].copy_(t)
        return plan.report


@dataclass
class InitReport:
    """What `init_from` did: every tensor of the model and of the checkpoint is in exactly one list."""

    path: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, checkpoint, model shape)
    missing: list[str] = field(default_factory=list)   # model tensors the checkpoint lacks: kept as initialised
    unused: list[str] = field(default_factory=list)    # checkpoint tensors the model lacks

    def lines(self) -> list[str]:
        out = [f"init from {self.path}: {len(self.loaded)} tensor(s) loaded"]
        for name, old, new in self.reinitialised:
            out.append(f"  newly initialised {name}: checkpoint {list(old)}, model {list(new)}")
        for name in self.missing:
            out.append(f"  newly initialised {name}: not in the checkpoint")
        for name in self.unused:
            out.append(f"  not used: {name} (the model has no such tensor)")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def init_from(module, path: str | Path) -> InitReport:
    """Start a freshly initialised module from a specc-layout weights file (`specc weights import` output, or any
    state_dict file with the module's names): weights only. A tensor whose shape differs from the checkpoint's (a
    2-class head on a backbone trained for something else) keeps its fresh initialisation and is listed, as
    `from_pretrained(num_labels=2)` does; tensors missing on either side are listed too. Nothing is skipped silently."""
    import torch

    layout: Layout = module_layout(module)
    report = InitReport(str(path))
    state = module.state_dict(keep_vars=True)
    with open_checkpoint(path) as ckpt, torch.no_grad():
        owners = {}  # checkpoint name that fills each model tensor: its own name, else a tied copy's
        for name in ckpt.info:
            owner = layout.aliases.get(name, name)
            if owner not in layout.tensors:
                report.unused.append(name)
            elif owner not in owners or name == owner:
                owners[owner] = name
        for name, info in layout.tensors.items():  # model order: reports read like the model
            src = owners.get(name)
            if src is None:
                report.missing.append(name)
            elif tuple(ckpt.info[src].shape) != tuple(info.shape):
                report.reinitialised.append((name, tuple(ckpt.info[src].shape), tuple(info.shape)))
            else:
                state[name].copy_(ckpt.get(src))
                report.loaded.append(name)
    return report
