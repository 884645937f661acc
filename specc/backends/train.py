"""`specc train-script`: write the standalone training script for a spec (all-or-nothing, like compile)."""
from __future__ import annotations

from pathlib import Path

from ..errors import CheckError
from ..fsutil import commit_files


def write_train_script(spec, path: Path, force: bool = False) -> Path:
    from ..train import TrainConfigError, train_script_for

    try:
        text = train_script_for(spec)
    except TrainConfigError as err:
        raise CheckError([e.diagnostic() for e in err.errors], spec.sources) from None
    return commit_files({Path(path): text}, force=force)[0]
