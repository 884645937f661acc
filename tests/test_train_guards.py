"""Generated train.py refuses what cannot work, with one clear line: non-finite losses and inputs, fractional token
ids, a model without parameters, a changed effective batch, sequences over the spec's bound, a stalled peer; and
names from the spec never shadow the script's own. Also --init-from, schedules across a resume, best/last-N."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_train_script import FIXTURES, REPO, load_script, read_log, run_script, token_file, write_script

from specc.train import ModelIO, TensorSig, render_train_script

torch = pytest.importorskip("torch")

BERT = ModelIO("TinyBERT", [TensorSig("ids", "i64", ("B", "T")), TensorSig("token_types", "i64", ("B", "T")),
                            TensorSig("mask", "bool", ("B", "T"))], [TensorSig("logits", "f32", ("B", 2))])


def script_for(tmp_path, source: str, io: ModelIO, **settings):
    path = tmp_path / f"train_{io.name.lower()}.py"
    path.write_text(render_train_script(source, io.name, io, {"out_dir": str(tmp_path / "out"), **settings}))
    return load_script(path)


def main(module, *args: str) -> int:
    return module.specc_train.main(module.SETUP, ["--quiet", *args])


def final(tmp_path, out: str = "out") -> dict:
    return json.loads((tmp_path / out / "final.json").read_text())


def test_bert_classifier_synthetic_and_npz_with_a_bool_mask(tmp_path):
    source = (FIXTURES / "tiny_bert.py.txt").read_text()
    # synthetic: token types stay inside their own (unknown) range instead of taking vocabulary ids
    module = script_for(tmp_path, source, BERT, vocab_size=64, seq_len=8, steps=3, batch_size=8,
                        synthetic_samples=64)
    assert main(module) == 0
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", ids=rng.integers(64, size=(40, 8)), token_types=rng.integers(2, size=(40, 8)),
             mask=rng.random((40, 8)) < 0.8, labels=rng.integers(2, size=40))
    assert main(module, "--data", "npz", "--train-path", str(tmp_path / "d.npz"), "--out-dir",
                str(tmp_path / "npz")) == 0
    assert final(tmp_path, "npz")["val_samples"] == 4


@pytest.mark.parametrize("name", ["Run", "Env", "Setting", "Console", "DataError", "DistributedDataParallel"])
def test_model_names_never_shadow_the_script(tmp_path, name, capsys):
    source = (FIXTURES / "tiny_cnn.py.txt").read_text().replace("TinyCNN", name)
    source += "\n\nspecc_train = 'taken'\nSETUP = 'taken'\n"  # even the script's own names
    io = ModelIO(name, [TensorSig("x", "f32", ("B", 3, 32, 32))], [TensorSig("logits", "f32", ("B", 10))])
    module = script_for(tmp_path, source, io, steps=2, batch_size=8, synthetic_samples=64)
    assert module.specc_train == "taken" and module.SETUP == "taken"
    text = (tmp_path / f"train_{name.lower()}.py").read_text()
    assert 'specc_train_2 = importlib.import_module("specc.train.runtime")' in text
    assert "SETUP_2 = specc_train_2.ScriptSetup(" in text
    assert module.specc_train_2.main(module.SETUP_2, ["--quiet"]) == 0


def test_model_without_parameters_is_a_clear_error(tmp_path, capsys):
    io = ModelIO("NoParams", [TensorSig("x", "f32", ("B", 10))], [TensorSig("logits", "f32", ("B", 10))])
    module = script_for(tmp_path, (FIXTURES / "no_params.py.txt").read_text(), io, steps=2)
    assert main(module) == 1
    assert capsys.readouterr().err == ("error: model NoParams has no trainable parameters: there is nothing to "
                                       "train\n")


def test_non_finite_loss_is_refused_with_the_step_and_batch(tmp_path, capsys):
    module = load_script(write_script(tmp_path, "TinyCNN", optimizer="sgd", lr=1e30, steps=5, batch_size=8,
                                      synthetic_samples=64, out_dir=str(tmp_path / "out")))
    assert main(module) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: step ") and "the loss is " in err and "epoch 0, batch " in err, err
    assert "samples " in err and "stopping before the weights change" in err


def test_nan_inputs_and_fractional_token_ids_are_refused(tmp_path, capsys):
    x = np.zeros((32, 3, 32, 32), dtype=np.float32)
    x[5, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, labels=np.zeros(32, dtype=np.int64))
    module = load_script(write_script(tmp_path, "TinyCNN", data="npz", batch_size=32, val_fraction=0.0))
    assert main(module, "--train-path", str(tmp_path / "nan.npz"), "--out-dir", str(tmp_path / "o1")) == 1
    assert "nan.npz: input 'x' of sample 5 holds NaN or infinity" in capsys.readouterr().err

    rows = np.arange(32 * 17, dtype=np.float64).reshape(32, 17) % 64
    rows[3, 4] = 7.5
    np.save(tmp_path / "frac.npy", rows)
    module = load_script(write_script(tmp_path, "TinyGPT", data="npy", seq_len=16, batch_size=32,
                                      val_fraction=0.0))
    assert main(module, "--train-path", str(tmp_path / "frac.npy"), "--out-dir", str(tmp_path / "o2")) == 1
    assert "frac.npy: token id 7.5 is not a whole number" in capsys.readouterr().err


def test_sequence_length_over_the_specs_bound_is_refused_before_training(tmp_path):
    from specc.api import loads
    from specc.train import train_script_for

    text = (REPO / "specs" / "gpt2.nn").read_text()
    spec = loads(text, "gpt2.nn", layers=1, d=32, heads=2, vocab=128, ctx=16)
    (tmp_path / "train.py").write_text(train_script_for(spec))
    result = run_script(tmp_path / "train.py", "--seq-len", "32")
    assert result.returncode == 2
    assert "--seq-len 32: the model allows at most T <= 16 (the spec's `T <= ctx` at gpt2.nn:" in result.stderr


def test_changed_effective_batch_on_resume_is_refused(tmp_path, capsys):
    token_file(tmp_path / "t.bin", n=4000)
    module = load_script(write_script(tmp_path, "TinyGPT", data="tokens", train_path=str(tmp_path / "t.bin"),
                                      seq_len=16, batch_size=8, steps=4, out_dir=str(tmp_path / "out")))
    assert main(module) == 0
    assert main(module, "--resume", "--steps", "6", "--batch-size", "4") == 1
    err = capsys.readouterr().err
    assert "trained with 8 samples per step (1 processes x batch_size 8 x grad_accum 1)" in err
    assert "this run would take 4" in err
    # the same global batch split differently is fine
    assert main(module, "--resume", "--steps", "6", "--batch-size", "4", "--grad-accum", "2") == 0


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_schedule_keeps_its_shape_when_resumed_with_more_steps(tmp_path, schedule):
    token_file(tmp_path / "t.bin", n=8000)
    settings = dict(data="tokens", train_path=str(tmp_path / "t.bin"), seq_len=16, batch_size=4, log_every=1,
                    schedule=schedule, warmup_steps=2, lr=1e-2, min_lr=1e-3, eval_every=0, val_fraction=0.0)
    module = load_script(write_script(tmp_path, "TinyGPT", **settings, steps=10, out_dir=str(tmp_path / "a")))
    assert main(module) == 0
    assert main(module, "--resume", "--steps", "14") == 0
    lrs = [float(r["lr"]) for r in read_log(tmp_path / "a")]
    longer = load_script(write_script(tmp_path, "TinyGPT", **settings, steps=10, out_dir=str(tmp_path / "b")))
    assert main(longer) == 0
    planned = [float(r["lr"]) for r in read_log(tmp_path / "b")]
    assert lrs[:10] == planned
    assert lrs[10:] == pytest.approx([1e-3] * 4)  # the curve ended at min_lr and stays there, no jump back up
    assert max(lrs) == pytest.approx(1e-2)


def test_init_from_lists_fresh_tensors_and_refuses_foreign_ones(tmp_path, capsys):
    safetensors = pytest.importorskip("safetensors.torch")
    module = load_script(write_script(tmp_path, "TinyCNN", steps=1, batch_size=8, synthetic_samples=64,
                                      out_dir=str(tmp_path / "out")))
    model = module.TinyCNN(module.TinyCNNConfig())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.5)
    state["fc.weight"] = torch.zeros(3, 4)  # another shape: initialised fresh, and said so
    del state["conv2.bias"]  # absent: initialised fresh, and said so
    safetensors.save_file(state, str(tmp_path / "w.safetensors"))
    assert module.specc_train.main(module.SETUP, ["--init-from", str(tmp_path / "w.safetensors"), "--eval-only"]) == 0
    out = capsys.readouterr().out
    assert "1 tensors not in the file are newly initialised: conv2.bias" in out
    assert "fc.weight (3, 4) -> (10, 1024)" in out
    assert "evaluation on " in out
    state["extra.weight"] = torch.zeros(2)
    safetensors.save_file(state, str(tmp_path / "bad.safetensors"))
    assert main(module, "--init-from", str(tmp_path / "bad.safetensors")) == 1
    assert "1 tensors have no place in the model: extra.weight" in capsys.readouterr().err


def test_best_last_n_and_early_stopping(tmp_path):
    module = load_script(write_script(tmp_path, "TinyCNN", steps=40, batch_size=8, synthetic_samples=128,
                                      eval_every=2, checkpoint_every=2, keep_last=3, best_metric="val_accuracy",
                                      early_stop=2, lr=1e-12, out_dir=str(tmp_path / "out")))
    assert main(module) == 0  # lr ~0: the accuracy never improves after the first evaluation
    result = final(tmp_path)
    assert result["early_stopped"] is True and result["step"] == 6
    kept = sorted(p.name for p in (tmp_path / "out").glob("step-*.pt"))
    assert kept == ["step-00000002.pt", "step-00000004.pt", "step-00000006.pt"]
    best = torch.load(tmp_path / "out" / "best.pt", weights_only=True)
    assert best["step"] == 2 and "val_accuracy" in best


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stalled_process_ends_its_peer_with_a_clear_message(tmp_path):
    script = write_script(tmp_path, "TinyCNN", steps=20, batch_size=4, synthetic_samples=64, dist_timeout=4.0)
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": port, "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, str(script), "--quiet", *extra], cwd=tmp_path, text=True,
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stderr=subprocess.PIPE)
             for rank, extra in ((0, ()), (1, ("--stall-after-step", "2")))]
    try:
        start = time.monotonic()
        err = procs[0].communicate(timeout=120)[1]
        assert procs[0].returncode == 1, err
        assert "[rank 0] error: no answer from the other processes within 4 s (--dist-timeout)" in err
        assert "Traceback" not in err and time.monotonic() - start < 90
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
