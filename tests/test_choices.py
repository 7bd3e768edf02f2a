"""--decoder choices: each utterance transcribed as the most probable of a list of phrases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.data.text import get_normalizer
from pipeline.errors import ModelError
from pipeline.evaluation.choices import ChoicesTranscriber, phrase_ids
from pipeline.evaluation.evaluate import load_model_dir


@pytest.fixture(scope="module")
def tiny(trained_tiny_model: Path):
    return load_model_dir(str(trained_tiny_model), device="cpu")


def spelled(tok, text: str, frames_per_token: int = 3) -> torch.Tensor:
    """(frames, vocab) logits whose best path spells `text`, each token held for a few frames, blanks between."""
    ids = tok(text).input_ids
    blank, vocab = tok.pad_token_id, len(tok)
    path = []
    for i in ids:
        path += [i] * frames_per_token + [blank]
    logits = torch.full((len(path), vocab), -4.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 4.0
    return logits


def test_the_most_probable_phrase_wins_and_its_score_is_its_ctc_loss(tiny) -> None:
    model, fe, tok, _ = tiny
    phrases = ["cat", "act", "cat", "at", "cast"]  # "cat" twice: kept once, in first place
    chooser = ChoicesTranscriber(model, fe, tok, phrases)
    assert chooser.phrases == ["cat", "act", "at", "cast"]
    for target in chooser.phrases:
        logits = spelled(tok, target)
        log_probs = logits.log_softmax(-1)
        losses = chooser.phrase_losses(log_probs)
        for phrase, loss in zip(chooser.phrases, losses, strict=True):  # one batched call = one CTC loss per phrase
            ids = torch.tensor([tok(phrase).input_ids])
            alone = F.ctc_loss(log_probs[:, None], ids, torch.tensor([len(logits)]), torch.tensor([ids.shape[1]]),
                               blank=tok.pad_token_id, reduction="sum")
            assert torch.allclose(loss, alone), phrase
        padded = torch.cat([logits, torch.zeros(5, logits.shape[1])])[None]  # frames past the mask are ignored
        mask = torch.arange(padded.shape[1])[None] < len(logits)
        assert chooser.logits_to_text(padded, mask) == [target]


def test_too_short_for_every_phrase_is_empty_and_unspellable_phrases_are_refused(tiny) -> None:
    model, fe, tok, _ = tiny
    chooser = ChoicesTranscriber(model, fe, tok, ["cat", "cast"])
    one_frame = spelled(tok, "c", frames_per_token=1)[:1][None]
    assert chooser.logits_to_text(one_frame, torch.ones(1, 1, dtype=torch.bool)) == [""]
    with pytest.raises(ModelError, match="cannot spell the phrase '7 éclairs'"):
        phrase_ids(tok, ["cat", "7 éclairs"])
    with pytest.raises(ModelError, match="no phrases"):
        ChoicesTranscriber(model, fe, tok, [])


def test_evaluate_script_chooses_among_the_transcripts(trained_tiny_model: Path, tiny_corpus: Path, tmp_path: Path,
                                                      run_script) -> None:
    out = tmp_path / "eval"
    proc = run_script("evaluate.py", "--model", trained_tiny_model, "--data", tiny_corpus / "test", "--output", out,
                      "--decoder", "choices", "--choices", tiny_corpus / "train", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["decoding"]["decoder"] == "choices" and metrics["decoding"]["choices_from"] == str(tiny_corpus / "train")
    normalize = get_normalizer("default")  # the tiny model's: the phrases are normalised as the references are
    train_phrases = {normalize(r["text"]) for r in _metadata(tiny_corpus / "train")} - {""}
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == metrics["num_utterances"] > 0
    assert all(r["hypothesis"] in train_phrases for r in rows)
    assert metrics["decoding"]["choices"] == len(train_phrases)

    phrases = tmp_path / "phrases.txt"
    phrases.write_text("one\n7 éclairs\n", encoding="utf-8")
    bad = run_script("evaluate.py", "--model", trained_tiny_model, "--data", tiny_corpus / "test", "--output", out,
                     "--decoder", "choices", "--choices", phrases, "--no-report")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --choices: the model's vocabulary cannot spell")
    alone = run_script("transcribe.py", "--model", trained_tiny_model, "--choices", phrases, "x.wav")
    assert alone.returncode == 2 and alone.stderr.strip() == "error: --decoder choices and --choices FILE go together"


def _metadata(folder: Path) -> list[dict[str, str]]:
    import csv

    with open(folder / "metadata.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
