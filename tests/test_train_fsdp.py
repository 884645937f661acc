"""FSDP2 under torchrun (gloo, CPU): a -D-shrunk Mixtral spec trains sharded per block with activation
checkpointing, writes torch.distributed.checkpoint folders, is SIGKILLed, and resumes exactly."""
from __future__ import annotations

import shutil

import pytest
from test_train_script import REPO, read_log, run_script

torch = pytest.importorskip("torch")

SHRUNK = dict(vocab=64, ctx=32, layers=2, d=32, heads=4, kv_heads=2, hidden=32, experts=4)
ARGS = ("--quiet", "--strategy", "fsdp", "--activation-checkpointing", "true", "--steps", "6", "--seq-len", "16",
        "--batch-size", "4", "--synthetic-samples", "256", "--checkpoint-every", "2", "--log-every", "1",
        "--eval-every", "3")


def full_state(folder) -> dict:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    target = folder.parent / (folder.name + ".pt")
    dcp_to_torch_save(folder, target)
    return torch.load(target, weights_only=True)["model"]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_fsdp_mixtral_trains_checkpoints_and_resumes_exactly(tmp_path):
    from specc.api import load
    from specc.train import train_script_for

    script = tmp_path / "train.py"
    script.write_text(train_script_for(load(REPO / "specs" / "mixtral_8x7b.nn", **SHRUNK)))
    torchrun = (shutil.which("torchrun"), "--standalone", "--nproc_per_node=2")
    reference = run_script(script, *ARGS, "--out-dir", "ref", launcher=torchrun)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert (tmp_path / "ref" / "latest.dcp").read_text() == "step-00000006.dcp\n"
    killed = run_script(script, *ARGS, "--out-dir", "cut", "--kill-after-step", "5", launcher=torchrun)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert (tmp_path / "cut" / "latest.dcp").read_text() == "step-00000004.dcp\n"
    resumed = run_script(script, *ARGS, "--out-dir", "cut", "--resume", launcher=torchrun)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_log(tmp_path / "cut") == read_log(tmp_path / "ref")
    a, b = full_state(tmp_path / "ref" / "step-00000006.dcp"), full_state(tmp_path / "cut" / "step-00000006.dcp")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(".experts." in k for k in a)  # the experts live inside their layer's shard
