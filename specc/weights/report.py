"""What a weight conversion did, and everything that did not fit, in one report."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field


class WeightsError(Exception):
    """A checkpoint, map or weights file that does not fit; the message names the file and the tensors."""


def closest(name: str, candidates: list[str] | set[str]) -> str | None:
    hits = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.5)
    return hits[0] if hits else None


def _shape(s) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]"


@dataclass
class MappingReport:
    """Checkpoint -> model (import) or model -> checkpoint (export): what went where and what did not fit."""

    source: str
    target: str
    mapped: list[tuple[list[str], list[str], str]] = field(default_factory=list)  # (from, to, transforms)
    unused: list[tuple[str, str]] = field(default_factory=list)          # (source tensor, why)
    unfilled: list[str] = field(default_factory=list)                    # target tensors nothing fills
    shapes: list[tuple[str, str, tuple, tuple, str]] = field(default_factory=list)  # (source, target, its shape,
    #                                                                                  wanted, what the map made)
    source_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    tied: list[tuple[str, str]] = field(default_factory=list)  # (source tensor, model tensor it must equal)

    @property
    def ok(self) -> bool:
        return not (self.unused or self.unfilled or self.shapes)

    def problems(self) -> str:
        """Every tensor that does not fit, each with the closest name on the other side."""
        lines = [f"{self.source} does not fit {self.target}:"]
        used_targets = {t for _, ts, _ in self.mapped for t in ts}
        free_targets = [t for t in self.target_names if t not in used_targets] or self.target_names
        used_sources = {s for ss, _, _ in self.mapped for s in ss}
        free_sources = [s for s in self.source_names if s not in used_sources] or self.source_names
        if self.unused:
            lines.append(f"  {len(self.unused)} {self.source} tensor(s) not used:")
            for name, why in self.unused:
                near = closest(why.rpartition(" ")[2] if why.startswith("maps to") else name, free_targets)
                lines.append(f"    {name}" + (f" ({why})" if why else "") + (f"; closest model tensor: {near}"
                                                                                  if near else ""))
        if self.unfilled:
            lines.append(f"  {len(self.unfilled)} {self.target} tensor(s) not filled:")
            for name in self.unfilled:
                near = closest(name, free_sources)
                lines.append(f"    {name}" + (f"; closest unused {self.source} tensor: {near}" if near else ""))
        if self.shapes:
            lines.append(f"  {len(self.shapes)} shape mismatch(es):")
            for src, dst, got, want, how in self.shapes:
                lines.append(f"    {src} {_shape(got)}" + (f" ({how})" if how else "") + f" -> {dst} needs {_shape(want)}")
        return "\n".join(lines)

    def summary(self) -> str:
        renamed = sum(1 for _, _, how in self.mapped if not how)
        transformed = [(s, t, how) for s, t, how in self.mapped if how]
        lines = [f"mapped {sum(len(t) for _, t, _ in self.mapped)} tensor(s) from {sum(len(s) for s, _, _ in self.mapped)}"
                 f" checkpoint tensor(s): {renamed} renamed, {len(transformed)} transformed"
                 + (f", {len(self.tied)} tied" if self.tied else "")]
        for src, dst, how in transformed[:8]:
            lines.append(f"  {', '.join(src[:3])}{' ...' if len(src) > 3 else ''} -> "
                         f"{', '.join(dst[:3])}{' ...' if len(dst) > 3 else ''} ({how})")
        if len(transformed) > 8:
            lines.append(f"  ... and {len(transformed) - 8} more transformed")
        for src, owner in self.tied:
            lines.append(f"  {src} is tied to {owner} (checked equal)")
        return "\n".join(lines)
