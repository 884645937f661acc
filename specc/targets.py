"""Targets are data: targets/*.toml files, validated with pydantic; errors point at the file and key."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .diagnostics import Diagnostic, SpecError
from .source import Span

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
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


def load_target(name_or_path: str) -> Target:
    aliases = {"torch": "torch-cpu", "tvm": "tvm-cpu", "cpu": "torch-cpu", "cuda": "torch-cuda"}
    name = aliases.get(name_or_path, name_or_path)
    path = Path(name)
    if path.suffix != ".toml":
        path = TARGETS_DIR / f"{name}.toml"
        if not path.is_file():
            raise SpecError.at("E0107", f"unknown target {name_or_path!r}",
                               help=f"known targets: {', '.join(available())}; or pass a path to a .toml file")
    if not path.is_file():
        raise SpecError.at("E0107", f"target file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line, col = getattr(e, "lineno", 1), getattr(e, "colno", 1)
        raise SpecError(Diagnostic("E0001", f"bad target file: {e.msg if hasattr(e, 'msg') else e}",
                                   Span(str(path), line, col, line, col + 1))) from None
    data.setdefault("name", path.stem)
    try:
        return Target(**data)
    except ValidationError as err:
        diags = []
        for item in err.errors():
            key = str(item["loc"][0]) if item["loc"] else ""
            line = _key_line(text, key)
            span = Span(str(path), line, 1, line, len(text.splitlines()[line - 1]) + 1) if line else Span(
                str(path), 1, 1, 1, 2)
            msg = f"target key {key!r}: {item['msg']}" if item["type"] != "extra_forbidden" else \
                f"unknown target key {key!r} (known: {', '.join(Target.model_fields)})"
            diags.append(Diagnostic("E0107", msg, span))
        raise SpecError(*diags) from None


def _key_line(text: str, key: str) -> int | None:
    for i, ln in enumerate(text.splitlines(), 1):
        if ln.strip().startswith(f"{key} ") or ln.strip().startswith(f"{key}="):
            return i
    return None
