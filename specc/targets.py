"""Targets are data: targets/*.toml files, validated with pydantic; errors point at the file and key."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .diagnostics import Diagnostic, SpecError
from .errors import CheckError
from .source import SourceMap, Span

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"


class Target(BaseModel):
    # strict: a TOML file has real booleans and numbers, so "yes" or "1" where one is expected is a mistake
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str
    backend: Literal["torch", "tvm"]
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    compile: bool = Field(False, description="wrap the emitted model in torch.compile")
    # TVM options
    arch: str | None = None  # e.g. sm_80 / sm_90 for cuda
    mcpu: str | None = None  # llvm -mcpu; "host" = detect
    num_threads: int | None = Field(None, ge=1)
    schedules: Literal["specc", "dlight", "none", "tuned"] = "specc"
    opt_level: int = Field(1, ge=0, le=1)
    description: str = ""


def available() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


class TargetNotFound(LookupError):
    """The command line named a target that does not exist: a usage error (exit 2), not a spec error."""


def load_target(name_or_path: str) -> Target:
    """A target by name (targets/NAME.toml, or an alias) or by path to a .toml file. A bad file raises CheckError
    with one located diagnostic per problem, quoting the file's lines."""
    aliases = {"torch": "torch-cpu", "tvm": "tvm-cpu", "cpu": "torch-cpu", "cuda": "torch-cuda"}
    name = aliases.get(name_or_path, name_or_path)
    path = Path(name)
    if path.suffix != ".toml":
        path = TARGETS_DIR / f"{name}.toml"
        if not path.is_file():
            raise TargetNotFound(f"unknown target {name_or_path!r} (known: {', '.join(available())}; "
                                 "or pass a path to a .toml file)")
    if not path.is_file():
        raise TargetNotFound(f"target file not found: {path}")
    sources = SourceMap()
    try:
        text = sources.read(path)
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError.at("E0107", f"cannot read target file {path}: {e}") from None
    file = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        where = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line, col = (int(where[1]), int(where[2])) if where else (1, 1)
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        raise CheckError([Diagnostic("E0001", f"bad target file: {msg}", Span(file, line, col, line, col + 1))],
                         sources) from None
    data.setdefault("name", path.stem)
    try:
        return Target(**data)
    except ValidationError as err:
        diags = []
        for item in err.errors():
            key = str(item["loc"][0]) if item["loc"] else ""
            if item["type"] == "extra_forbidden":
                msg = f"unknown target key {key!r} (known: {', '.join(Target.model_fields)})"
                span = _key_span(file, text, key, value=False)
            elif item["type"] == "missing":
                msg = f"target file has no {key!r} key"
                span = Span(file, 1, 1, 1, 1)
            else:
                msg = f"target key {key!r}: {item['msg']}"
                span = _key_span(file, text, key, value=True)
            diags.append(Diagnostic("E0107", msg, span))
        raise CheckError(diags, sources) from None


def _key_span(file: str, text: str, key: str, value: bool) -> Span:
    """Where a top-level key is set: `key = ...`, `"key" = ...`, `key.sub = ...` or a `[key]` table header; the
    value's columns when value is set, else the key's."""
    pattern = re.compile(r"^\s*(?:\[\[?\s*)?([\"']?)(" + re.escape(key) + r")\1\s*(?:[.=\]])")
    for i, ln in enumerate(text.splitlines(), 1):
        m = pattern.match(ln)
        if not m:
            continue
        start, end = m.start(2) + 1, m.end(2) + 1
        rest = ln[m.end():]
        if value and ln[m.end() - 1] == "=":
            val = rest.split("#", 1)[0].rstrip()
            lead = len(rest) - len(rest.lstrip())
            if val.strip():
                start, end = m.end() + lead + 1, m.end() + len(val) + 1
        return Span(file, i, start, i, max(end, start + 1))
    return Span(file, 1, 1, 1, 1)
