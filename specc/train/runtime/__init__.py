"""The training runtime a generated train.py imports: `main(SETUP)` trains the script's model.

A generated script holds its model's source and one `ScriptSetup` literal (inputs, outputs, settings with the
spec's defaults, bounds) and calls `main`. Everything else lives here, in real modules: the command line
(cli.py), processes (env.py), data sources and loaders (data/), augmentation (augment.py), tasks and losses
(tasks.py), optimizer and schedules (optim.py), DDP / FSDP and the memory estimate (scale.py), checkpoints
(checkpoint.py), --init-from (weights.py), logs (logs.py), building a run (build.py) and the loop (loop.py).
Importing this package imports torch; specc's compiler never imports it.
"""
from .loop import main
from .setup import API, Bound, ScriptSetup, Setting, TensorSpec

__all__ = ["API", "Bound", "ScriptSetup", "Setting", "TensorSpec", "main"]
