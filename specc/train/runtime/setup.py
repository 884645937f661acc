"""What a generated train.py tells the runtime about its model, and the errors the runtime reports to users."""
from __future__ import annotations

import dataclasses

API = 2  # bumped when ScriptSetup or main change incompatibly; a script built for another API is refused
CHECKPOINT_FORMAT = "specc-train-checkpoint/2"
IGNORE_INDEX = -100  # label of positions that do not count (unmasked tokens in masked_lm)
LM_TASKS = ("causal_lm", "masked_lm", "seq2seq")
FLOAT_DTYPES = ("f16", "bf16", "f32", "f64")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # 'f32', 'i64', 'bool', ...
    shape: tuple  # ints and symbolic names; dim 0 is the batch

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclasses.dataclass(frozen=True)
class Setting:
    """One training setting: a command-line option whose default comes from the spec."""

    name: str
    kind: str  # 'int' | 'float' | 'str' | 'bool'
    default: object
    help: str = ""
    choices: tuple = ()
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive
    below: float | None = None  # exclusive


@dataclasses.dataclass(frozen=True)
class Bound:
    """The spec's bound on a symbolic dim: `where T <= ctx` gives Bound('T', 1024, 'T <= ctx', 'gpt2.nn:29:33')."""

    dim: str
    size: int
    text: str = ""
    where: str = ""

    def describe(self) -> str:
        said = f" (the spec's `{self.text}`" + (f" at {self.where})" if self.where else ")") if self.text else ""
        return f"{self.dim} <= {self.size}{said}"


@dataclasses.dataclass(frozen=True)
class ScriptSetup:
    model_name: str
    model_class: type
    config_class: type
    inputs: tuple  # of TensorSpec, in forward() order
    outputs: tuple  # output names, in the order forward() returns them; the `output` setting picks the logits
    settings: tuple  # of Setting
    bounds: tuple = ()  # of Bound
    api: int = 2  # the runtime interface the script was generated for


class UserError(Exception):
    """A problem the user can fix (bad file, bad option): reported as one line and exit code 1, no traceback."""


class DataError(UserError):
    """A data file that is missing, unreadable, truncated or mis-shaped; the message starts with the file."""
