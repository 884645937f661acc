"""Weight maps as data: how a published checkpoint's tensors become a spec's state_dict, and back.

A map is a small TOML file in a `maps/` folder beside the specs (specs/maps/gpt2-hf.toml). It never imports torch:
parsing a map and planning which tensor goes where reads names and shapes only.

    spec = "gpt2.nn"                      # the spec it is written for, relative to the folder holding maps/
    format = "huggingface"                # export writes config.json + model.safetensors
    prefix = "transformer."               # checkpoint names may carry it (GPT2LMHeadModel); stripped on import
    export_prefix = "transformer."        # written before every name on export
    ignore = ["h.{i}.attn.bias"]          # checkpoint tensors that hold no weights (old GPT-2 causal masks)

    [params]                              # spec hyper-parameter = config.json key (dotted for nested keys, a list
    vocab = "vocab_size"                  #   for alternatives: the first present wins; export writes the first;
    classes = "len(id2label)"             #   len(key) counts a table's entries)

    [config]                              # fixed config.json entries: written on export, checked on import
    model_type = "gpt2"                   #   ("= d // heads": computed from the hyper-parameters on export)

    [tensors]                             # checkpoint pattern = model pattern, or a table of transforms, in order:
    "wte.weight" = "wte.weight"           #   the first rule whose pattern matches a checkpoint name takes it
    "h.{i}.attn.c_attn.weight" = { to = "layers.{i}.attn.c_attn.weight", transpose = true }

Patterns: `{i}` matches a layer index; the other side may use `{2*i+1}` (an affine expression of one index, solved
when matching), so an encoder whose blocks come in pairs maps onto a flat list; `{*}` matches the rest of a name
(`"layer1.0.{*}" = "basic_block.{*}"`). Transforms (import direction;
export applies the inverse): `transpose`, `permute = [..]`, `shape = [..]` (the checkpoint's shape; -1 once, or a
hyper-parameter name), `split = DIM` (one checkpoint tensor -> the `to` list), `concat = DIM` (the `from` list ->
one), `stack = "e"` (every `{e}` of the checkpoint -> one tensor, new dim 0), `unstack = "e"` (the reverse),
`dtype` (the checkpoint's dtype on export). Tied tensors need no rule: the model's aliases (lm_head tied to wte)
are filled by their owner, and a checkpoint tensor mapped onto an alias must equal the owner's.
"""
from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .report import WeightsError

DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")
_RULE_KEYS = {"to", "from", "transpose", "permute", "shape", "split", "concat", "stack", "unstack", "dtype"}
_TOP_KEYS = {"spec", "model", "format", "prefix", "export_prefix", "params", "config", "tensors", "tensor",
             "description", "ignore"}


# ---- patterns ------------------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{([^{}]*)\}")
_AFFINE = re.compile(r"^\s*(?:(\d+)\s*\*\s*)?([A-Za-z_]\w*)\s*(?:([+-])\s*(\d+))?\s*$")


@dataclass(frozen=True)
class Slot:
    """`{a*var+b}` in a pattern."""

    var: str
    a: int = 1
    b: int = 0

    def value(self, env: dict[str, int]) -> int | str:
        return env["*"] if self.var == "*" else self.a * env[self.var] + self.b

    def solve(self, n: int) -> int | None:
        k, r = divmod(n - self.b, self.a)
        return k if r == 0 and k >= 0 else None


@dataclass(frozen=True)
class Pattern:
    text: str
    parts: tuple  # str literals and Slots, alternating
    regex: re.Pattern

    @classmethod
    def parse(cls, text: str, where: str) -> Pattern:
        parts: list = []
        rx = ""
        pos = 0
        for m in _SLOT.finditer(text):
            lit = text[pos:m.start()]
            parts.append(lit)
            rx += re.escape(lit)
            if m.group(1) == "*":  # the rest of a dotted name, copied as it is
                if any(isinstance(p, Slot) and p.var == "*" for p in parts):
                    raise WeightsError(f"{where}: {{*}} appears twice in {text!r}")
                parts.append(Slot("*"))
                rx += r"(.+)"
                pos = m.end()
                continue
            am = _AFFINE.match(m.group(1))
            if am is None:
                raise WeightsError(f"{where}: {{{m.group(1)}}} in {text!r} is not an index like {{i}} or {{2*i+1}}")
            a, var, sign, b = am.groups()
            slot = Slot(var, int(a or 1), (int(b) if sign == "+" else -int(b)) if b else 0)
            if slot.a == 0:
                raise WeightsError(f"{where}: {{{m.group(1)}}} multiplies the index by 0")
            parts.append(slot)
            rx += r"(\d+)"
            pos = m.end()
        parts.append(text[pos:])
        rx += re.escape(text[pos:])
        if "{" in parts[-1] or "}" in parts[-1]:
            raise WeightsError(f"{where}: unbalanced braces in {text!r}")
        return cls(text, tuple(parts), re.compile(rx + r"\Z"))

    @property
    def slots(self) -> list[Slot]:
        return [p for p in self.parts if isinstance(p, Slot)]

    @property
    def vars(self) -> set[str]:
        return {s.var for s in self.slots}

    def match(self, name: str) -> dict[str, int] | None:
        m = self.regex.match(name)
        if m is None:
            return None
        env: dict[str, int] = {}
        for slot, digits in zip(self.slots, m.groups()):
            if slot.var == "*":
                env["*"] = digits
                continue
            if len(digits) > 1 and digits[0] == "0":
                return None
            v = slot.solve(int(digits))
            if v is None or env.setdefault(slot.var, v) != v:
                return None
        return env

    def format(self, env: dict[str, int]) -> str:
        return "".join(p if isinstance(p, str) else str(p.value(env)) for p in self.parts)


# ---- rules and maps ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """Checkpoint tensors `src` <-> model tensors `dst`, with the transforms that turn one into the other."""

    src: tuple[Pattern, ...]
    dst: tuple[Pattern, ...]
    transpose: bool = False
    permute: tuple[int, ...] | None = None
    shape: tuple[Any, ...] | None = None
    split: int | None = None
    concat: int | None = None
    stack: str | None = None
    unstack: str | None = None
    dtype: str | None = None
    where: str = ""

    @property
    def is_rename(self) -> bool:
        return len(self.src) == len(self.dst) == 1 and not (self.transpose or self.permute or self.shape
                                                             or self.stack or self.unstack)


@dataclass
class WeightMap:
    name: str
    path: Path | None
    rules: list[Rule]
    spec: str | None = None
    model: str | None = None
    format: str = "state_dict"
    prefix: tuple[str, ...] = ()
    export_prefix: str = ""
    params: dict[str, tuple[str, ...]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    ignore: tuple[Pattern, ...] = ()  # checkpoint tensors that carry no weights (GPT-2's stored causal masks)

    def into(self, prefix: str) -> WeightMap:
        """This map with every model-side name under `prefix` (a submodule such as "bert."): a backbone's map
        applied to a model that calls the backbone as a block (`specc weights import --into bert`)."""
        if not self.rules:  # the identity: a file in the submodule's own layout
            rules = [Rule((Pattern.parse("{*}", "--into"),), (Pattern.parse(prefix + "{*}", "--into"),),
                          where="--into")]
        else:
            rules = [replace(r, dst=tuple(Pattern.parse(prefix + p.text, r.where) for p in r.dst)) for r in self.rules]
        return replace(self, rules=rules, name=f"{self.name} into {prefix.removesuffix('.')}")

    def ignored(self, name: str) -> bool:
        cands = [name] + [name[len(p):] for p in self.prefix if p and name.startswith(p)]
        return any(p.match(c) is not None for p in self.ignore for c in cands)

    @property
    def spec_path(self) -> Path | None:
        if self.spec is None or self.path is None:
            return None
        return (self.path.parent.parent / self.spec).resolve()

    # -- checkpoint config.json -> spec hyper-parameters
    def overrides(self, config: dict | None) -> dict[str, Any]:
        """The spec's hyper-parameters that the checkpoint's config.json sets (keys missing there are skipped)."""
        out: dict[str, Any] = {}
        if not config:
            return out
        for param, keys in self.params.items():
            for key in keys:
                found, value = _lookup(config, key)
                if found and value is not None:
                    out[param] = value
                    break
        return out

    def check_config(self, config: dict | None, source: str) -> None:
        problems = []
        for key, want in self.config.items():
            if key == "architectures" or _is_expr(want):
                continue
            found, value = _lookup(config or {}, key)
            if found and value != want:
                problems.append(f"{key} = {value!r}, this map is for {want!r}")
        if problems:
            raise WeightsError(f"{source}: config.json does not fit map {self.name!r}: " + "; ".join(problems))

    def export_config(self, hparams: dict[str, Any]) -> dict[str, Any]:
        """config.json for export: the fixed entries, then every mapped hyper-parameter under its first key.
        A fixed entry written "= expr" is computed from the hyper-parameters (`d_kv = "= d // heads"`)."""
        out = {k: _evaluate(v[1:], hparams, self.name) if _is_expr(v) else v for k, v in self.config.items()}
        for param, keys in self.params.items():
            if param in hparams:
                _store(out, keys[0], hparams[param])
        return out


def _is_expr(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("=")


_ARITH = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
          ast.FloorDiv: lambda a, b: a // b}


def _evaluate(text: str, hparams: dict[str, Any], where: str) -> Any:
    """Integer arithmetic over hyper-parameter names (+ - * //), nothing else: a map is data, never code."""
    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in hparams:
            return hparams[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            return _ARITH[type(node.op)](ev(node.left), ev(node.right))
        raise WeightsError(f"map {where}: {text.strip()!r}: only + - * // over the spec's hyper-parameters")

    try:
        return ev(ast.parse(text.strip(), mode="eval").body)
    except SyntaxError:
        raise WeightsError(f"map {where}: {text.strip()!r} is not an expression") from None


def _lookup(config: dict, key: str) -> tuple[bool, Any]:
    """config[key]; dotted keys descend into nested tables; `len(key)` counts entries (classes = len(id2label))."""
    if key.startswith("len(") and key.endswith(")"):
        found, value = _lookup(config, key[4:-1])
        return (True, len(value)) if found and isinstance(value, (dict, list)) else (False, None)
    cur: Any = config
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _store(config: dict, key: str, value: Any) -> None:
    if key == "len(id2label)":  # Hugging Face's class count: labels named as from_pretrained names them
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(value)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(value)}
        return
    if key.startswith("len("):
        raise WeightsError(f"cannot write {key} back to config.json")
    parts = key.split(".")
    cur = config
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def identity_map() -> WeightMap:
    """For checkpoints already in the spec's own layout (saved from the emitted module or by `weights import`)."""
    return WeightMap("identity", None, [], format="specc")


def load_map(path: Path) -> WeightMap:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the map: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not a valid TOML map: {e}") from None
    return parse_map(data, path.stem, path)


def parse_map(data: dict, name: str, path: Path | None = None) -> WeightMap:
    where = str(path or name)
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise WeightsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_TOP_KEYS))})")
    rules = []
    for src, val in (data.get("tensors") or {}).items():
        rules.append(_rule(src, val, f"{where}: [tensors] {src!r}"))
    for k, val in enumerate(data.get("tensor") or []):
        if not isinstance(val, dict) or "from" not in val:
            raise WeightsError(f"{where}: [[tensor]] #{k + 1} needs `from` and `to`")
        rules.append(_rule(None, val, f"{where}: [[tensor]] #{k + 1}"))
    params = {}
    for p, keys in (data.get("params") or {}).items():
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise WeightsError(f"{where}: [params] {p} must name a config.json key or a list of them")
        params[p] = keys
    prefix = data.get("prefix", ())
    prefix = (prefix,) if isinstance(prefix, str) else tuple(prefix)
    return WeightMap(name, path, rules, spec=data.get("spec"), model=data.get("model"),
                     format=data.get("format", "state_dict"), prefix=prefix,
                     export_prefix=data.get("export_prefix", ""), params=params, config=dict(data.get("config") or {}),
                     description=data.get("description", ""),
                     ignore=tuple(Pattern.parse(i, f"{where}: ignore") for i in data.get("ignore", ())))


def _rule(src: str | None, val: Any, where: str) -> Rule:
    if isinstance(val, str):
        val = {"to": val}
    if not isinstance(val, dict):
        raise WeightsError(f"{where}: expected a model name or a table, got {val!r}")
    unknown = set(val) - _RULE_KEYS
    if unknown:
        raise WeightsError(f"{where}: unknown transform(s) {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(sorted(_RULE_KEYS - {'from', 'to'}))})")
    if "to" not in val:
        raise WeightsError(f"{where}: needs `to` (the model tensor)")
    froms = val.get("from", src)
    froms = [froms] if isinstance(froms, str) else list(froms)
    tos = [val["to"]] if isinstance(val["to"], str) else list(val["to"])
    rule = Rule(tuple(Pattern.parse(f, where) for f in froms), tuple(Pattern.parse(t, where) for t in tos),
                transpose=bool(val.get("transpose", False)),
                permute=tuple(val["permute"]) if "permute" in val else None,
                shape=tuple(val["shape"]) if "shape" in val else None,
                split=val.get("split"), concat=val.get("concat"), stack=val.get("stack"),
                unstack=val.get("unstack"), dtype=val.get("dtype"), where=where)
    _validate(rule)
    return rule


def _validate(r: Rule) -> None:
    def bad(msg: str):
        raise WeightsError(f"{r.where}: {msg}")

    if len(r.src) > 1 and r.concat is None:
        bad("several checkpoint tensors need `concat = DIM`")
    if len(r.dst) > 1 and r.split is None:
        bad("several model tensors need `split = DIM`")
    if r.concat is not None and len(r.src) < 2:
        bad("`concat` needs a `from` list of two or more tensors")
    if r.split is not None and len(r.dst) < 2:
        bad("`split` needs a `to` list of two or more tensors")
    if r.transpose and r.permute:
        bad("`transpose` and `permute` together: give one permutation")
    if r.shape is not None and (r.transpose or r.permute or r.split is not None or r.concat is not None):
        bad("`shape` (a reshape) cannot be combined with transpose/permute/split/concat")
    if r.dtype is not None and r.dtype not in DTYPES:
        bad(f"dtype {r.dtype!r} is not one of {', '.join(DTYPES)}")
    if r.permute is not None and sorted(r.permute) != list(range(len(r.permute))):
        bad(f"permute {list(r.permute)} is not a permutation")
    src_vars = set().union(*(p.vars for p in r.src))
    dst_vars = set().union(*(p.vars for p in r.dst))
    if r.stack is not None:
        if r.stack not in src_vars or r.stack in dst_vars:
            bad(f"stack = {r.stack!r}: {{{r.stack}}} must appear in the checkpoint pattern only")
        src_vars = src_vars - {r.stack}
    if r.unstack is not None:
        if r.unstack not in dst_vars or r.unstack in src_vars:
            bad(f"unstack = {r.unstack!r}: {{{r.unstack}}} must appear in the model pattern only")
        dst_vars = dst_vars - {r.unstack}
    if src_vars != dst_vars and r.dst:
        bad(f"the indices differ between sides ({sorted(src_vars)} vs {sorted(dst_vars)})")


# ---- finding a map -------------------------------------------------------------------------------------------

def map_dirs(spec_path: Path | None) -> list[Path]:
    from ..source import STDLIB

    dirs = []
    if spec_path is not None:
        dirs.append(Path(spec_path).resolve().parent / "maps")
    dirs.append(STDLIB / "maps")
    out = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def find_map(name: str, spec_path: Path | None = None) -> WeightMap:
    """`--map NAME`: a .toml path, or NAME.toml in maps/ beside the spec, then in the zoo's specs/maps/."""
    p = Path(name)
    if p.suffix == ".toml" or "/" in name:
        if not p.is_file():
            raise WeightsError(f"no such map file: {name}")
        return load_map(p)
    for d in map_dirs(spec_path):
        if (d / f"{name}.toml").is_file():
            return load_map(d / f"{name}.toml")
    known = sorted({f.stem for d in map_dirs(spec_path) if d.is_dir() for f in d.glob("*.toml")})
    raise WeightsError(f"no map named {name!r} (looked in {', '.join(str(d) for d in map_dirs(spec_path))}; "
                       f"known: {', '.join(known) or 'none'})")


def maps_for(spec_path: Path) -> list[WeightMap]:
    """The maps written for this spec file (their `spec` key names it)."""
    spec_path = Path(spec_path).resolve()
    found = []
    for d in map_dirs(spec_path):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                m = load_map(f)
                if m.spec_path == spec_path:
                    found.append(m)
    return found
