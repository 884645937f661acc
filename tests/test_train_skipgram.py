"""The skipgram training task (word2vec, Mikolov et al. 2013) on specs/word2vec_sgns.nn: the pair and negative
sampler, the negative-sampling loss, what a short run learns, exact resume, and the train-section checks."""
from __future__ import annotations

import signal
import types
from pathlib import Path

import numpy as np
import pytest

from specc.train import train_script_for

torch = pytest.importorskip("torch")

from test_train_script import read_log, run_script  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "specs" / "word2vec_sgns.nn"
VOCAB, TOPICS = 40, 8  # 8 topics of 5 words each


def _spec(text: str | None = None, **dims):
    from specc.api import loads

    return loads(SPEC.read_text() if text is None else text, "word2vec_sgns.nn", **{"vocab": VOCAB, "d": 16, **dims})


def topic_corpus(path: Path, n: int = 30_000, seed: int = 0) -> Path:
    """Runs of 12 tokens, each run drawn from one random topic's 5 words: words of a topic share their contexts."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(TOPICS, size=n // 12 + 1).repeat(12)[:n]
    tokens = topics * (VOCAB // TOPICS) + rng.integers(VOCAB // TOPICS, size=n)
    tokens.astype(np.uint16).tofile(path)
    return path


def write_w2v_script(tmp: Path) -> Path:
    script = tmp / "train_w2v.py"
    script.write_text(train_script_for(_spec()))
    return script


BASE = ("--quiet", "--train-path", "corpus.bin", "--window", "2", "--negatives", "4", "--batch-size", "64",
        "--lr", "0.05")
RUN = (*BASE, "--steps", "40", "--eval-every", "20", "--checkpoint-every", "10", "--log-every", "1")


@pytest.fixture(scope="module")
def w2v_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("w2v")
    topic_corpus(tmp / "corpus.bin")
    script = write_w2v_script(tmp)
    result = run_script(script, *RUN, "--out-dir", "uninterrupted")
    assert result.returncode == 0, result.stderr
    return script, tmp / "uninterrupted"


def _weights(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def _in_vectors(state: dict) -> torch.Tensor:
    (key,) = [k for k in state if k.endswith("in_embed.weight")]
    return state[key]


def test_planted_topics_are_similar_after_training(tmp_path):
    topic_corpus(tmp_path / "corpus.bin")
    script = write_w2v_script(tmp_path)
    result = run_script(script, *BASE, "--steps", "300", "--eval-every", "300", "--log-every", "50")
    assert result.returncode == 0, result.stderr
    vectors = torch.nn.functional.normalize(_in_vectors(_weights(tmp_path / "out")).float(), dim=1)
    cosine = vectors @ vectors.T
    topic = torch.arange(VOCAB) // (VOCAB // TOPICS)
    same = (topic[:, None] == topic[None, :]) & ~torch.eye(VOCAB, dtype=torch.bool)
    other = topic[:, None] != topic[None, :]
    # measured: 0.65 within a topic, 0.25 across
    assert cosine[same].mean() > cosine[other].mean() + 0.25, (cosine[same].mean(), cosine[other].mean())
    per_word_same = (cosine * same).sum(1) / same.sum(1)
    per_word_other = (cosine * other).sum(1) / other.sum(1)
    assert (per_word_same > per_word_other).all()
    val = [r for r in read_log(tmp_path / "out") if r["split"] == "val"]
    assert float(val[-1]["accuracy"]) > 0.5  # the true context outscores all 4 negatives (chance: 0.2)


def test_sigkill_and_resume_matches_uninterrupted_run(w2v_run):
    script, reference = w2v_run
    args = (*RUN, "--out-dir", "interrupted")
    killed = run_script(script, *args, "--kill-after-step", "25")
    assert killed.returncode == -signal.SIGKILL
    out = script.parent / "interrupted"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 20
    resumed = run_script(script, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert read_log(out) == read_log(reference)  # every row, including the steps redone after the kill
    final, expected = _weights(out), _weights(reference)
    assert all(torch.equal(final[k], expected[k]) for k in expected)


# ---------------------------------------------------------------------------------------------------------------
# the sampler and the loss, in process


def _cfg(**overrides):
    settings = {"task": "skipgram", "seed": 3, "window": 3, "negatives": 6, "vocab_size": 50, "seq_len": None,
                **overrides}
    return types.SimpleNamespace(**settings)


def _batch(cfg, tokens, indices, salt=0):
    from specc.train.runtime.data.arrays import token_samples
    from specc.train.runtime.tasks import TASK_BATCHES

    source = token_samples(tokens, "corpus.bin", cfg)
    return source, TASK_BATCHES["skipgram"](None, cfg, source, source.take(indices), indices, salt)


def test_pairs_come_from_the_window_and_depend_only_on_the_sample():
    cfg = _cfg()
    tokens = np.arange(1000) % 50
    source, ([center, candidates], labels) = _batch(cfg, tokens, np.arange(source_count := 994))
    assert source.count == source_count == 1000 - 2 * cfg.window
    assert np.array_equal(center, tokens[cfg.window:cfg.window + source_count])
    distance = (candidates[:, 0] - center + 25) % 50 - 25  # the stream counts up, so ids give the offset
    assert set(np.unique(distance)) == {-3, -2, -1, 1, 2, 3}
    # word2vec's shrunk windows: near words are drawn more often than far ones (weights 3:2:1)
    near, far = np.mean(np.abs(distance) == 1), np.mean(np.abs(distance) == 3)
    assert 2.3 < near / far < 3.9
    assert candidates.shape == (source_count, 1 + cfg.negatives) and not labels.any()
    # a sample's draws depend on its index, the seed and the split only, never on the batch it is read in
    _, ([c2, cand2], _) = _batch(cfg, tokens, np.array([500, 7, 120]))
    assert np.array_equal(cand2, candidates[[500, 7, 120]]) and np.array_equal(c2, center[[500, 7, 120]])
    _, ([_, other_seed], _) = _batch(_cfg(seed=4), tokens, np.array([500, 7, 120]))
    _, ([_, val_split], _) = _batch(cfg, tokens, np.array([500, 7, 120]), salt=1)
    assert not np.array_equal(other_seed, cand2) and not np.array_equal(val_split, cand2)


def test_negatives_follow_the_unigram_distribution_to_the_three_quarters():
    cfg = _cfg(negatives=20, vocab_size=4, window=1)
    counts = np.array([8000, 1000, 1000, 0])  # token 3 never occurs, so it is never a negative
    tokens = np.random.default_rng(0).permutation(np.repeat(np.arange(4), counts))
    _, ([_, candidates], _) = _batch(cfg, tokens, np.arange(4000))
    drawn = np.bincount(candidates[:, 1:].ravel(), minlength=4) / candidates[:, 1:].size
    expected = counts ** 0.75 / (counts ** 0.75).sum()
    assert np.allclose(drawn, expected, atol=0.01) and drawn[3] == 0


def test_loss_is_negative_sampling_objective():
    from specc.train.runtime.tasks import task_loss

    scores = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    sigmoid = torch.sigmoid
    expected = torch.stack([-torch.log(sigmoid(s[0])) - torch.log(sigmoid(-s[1:])).sum() for s in scores])
    labels = torch.zeros(2, dtype=torch.int64)
    assert torch.allclose(task_loss(scores, labels, task="skipgram"), expected.mean())
    assert torch.allclose(task_loss(scores, labels, reduction="sum", task="skipgram"), expected.sum())


# ---------------------------------------------------------------------------------------------------------------
# train-section checks: located errors from the spec's check


def _with_train(body: str) -> str:
    text = SPEC.read_text()
    start = text.index("  train {")
    return text[:start] + "  train {\n" + body + "  }\n}\n"


@pytest.mark.parametrize("body, words, line_text", [
    ('    task = "skipgram"\n    vocab_size = vocab\n    window = 0\n', "'window' = 0: should be greater than or "
     "equal to 1", "window = 0"),
    ('    task = "skipgram"\n    vocab_size = vocab\n    negatives = -2\n', "'negatives' = -2", "negatives = -2"),
    ('    task = "skipgram"\n    data = "npz"\n    vocab_size = vocab\n', "task skipgram reads a token stream",
     'data = "npz"'),
    ('    task = "skipgram"\n    window = 2\n', "set vocab_size", 'task = "skipgram"'),
])
def test_bad_train_values_are_located_errors(body, words, line_text):
    from specc.api import CheckError

    with pytest.raises(CheckError) as info:
        _spec(_with_train(body))
    rendered = info.value.render()
    assert "E0403" in rendered and words in rendered, rendered
    assert "word2vec_sgns.nn:" in rendered and line_text in rendered


def test_a_fixed_candidate_width_fixes_the_negatives():
    from specc.api import CheckError

    text = _with_train('    task = "skipgram"\n    vocab_size = vocab\n    negatives = 5\n')
    text = text.replace("input context: i64[B, K]", "input context: i64[B, 4]")
    with pytest.raises(CheckError) as info:
        _spec(text)
    assert "negatives = 5, but input 'context': i64[B, 4] fixes" in info.value.render()
    # without the setting, the width gives it
    script = train_script_for(_spec(text.replace("    negatives = 5\n", "")))
    assert 'Setting("negatives", "int", 3' in script


def test_task_is_inferred_from_the_signature():
    text = _with_train("    vocab_size = vocab\n    window = 3\n")
    assert 'Setting("task", "str", "skipgram"' in train_script_for(_spec(text))


def test_skipgram_on_a_language_model_names_the_task():
    from specc.api import CheckError, loads

    text = (REPO / "specs" / "gpt2.nn").read_text()
    end = text.rstrip().rfind("}")
    with pytest.raises(CheckError) as info:
        loads(text[:end] + '  train {\n    task = "skipgram"\n    vocab_size = 128\n  }\n' + text[end:], "gpt2.nn",
              layers=1, d=32, heads=2, vocab=128, ctx=16)
    assert "task = skipgram needs two integer inputs, center [B] then context [B, K]" in info.value.render()
