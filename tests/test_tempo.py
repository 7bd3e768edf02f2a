"""Tempo ensemble decoding (pipeline/evaluation/tempo.py): tempos, choice, errors, the evaluate.py option."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.errors import ModelError
from pipeline.evaluation.evaluate import build_transcriber, load_model_dir
from pipeline.evaluation.inference import Transcriber
from pipeline.evaluation.tempo import TempoEnsembleTranscriber, parse_tempos

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _test_audio(corpus: Path, n: int) -> list:
    from pipeline.audio import read_audio

    with open(corpus / "test" / "metadata.csv", encoding="utf-8") as f:
        names = [r["file_name"] for r in csv.DictReader(f)][:n]
    return [read_audio(str(corpus / "test" / name), 16000)[0] for name in names]


def test_parse_tempos() -> None:
    assert parse_tempos("1.125, 0.875,1") == [0.875, 1.0, 1.125]
    assert parse_tempos([0.9]) == [0.9, 1.0]  # tempo 1 is always a member
    for bad in ("fast", "0.2", "1,3"):
        with pytest.raises(ModelError, match="--tempos"):
            parse_tempos(bad)


def test_tempo_one_alone_is_plain_greedy_and_other_tempos_change_the_frame_rate(trained_tiny_model: Path,
                                                                               tiny_corpus: Path) -> None:
    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    audios = _test_audio(tiny_corpus, 6)
    plain = Transcriber(model, fe, tok).transcribe(audios)
    assert TempoEnsembleTranscriber(model, fe, tok, [1.0]).transcribe(audios) == plain
    ens = TempoEnsembleTranscriber(model, fe, tok, [0.5, 1.0, 1.25])
    assert ens.hops == [round(fe.hop_length * t) for t in (0.5, 1.0, 1.25)]
    assert ens.members[1] is ens
    frames = [member.forward(audios[:1])[1].sum().item() for member in ens.members]
    assert frames[0] == pytest.approx(2 * frames[1], abs=2)  # half the hop, twice the output frames
    assert frames[2] < frames[1]
    texts = ens.transcribe(audios)
    assert len(texts) == len(audios) and all(isinstance(t, str) for t in texts)


def _ctc_probability(log_probs: torch.Tensor, labels: tuple[int, ...], blank: int, symbols: list[int]) -> float:
    """P(labels) by enumerating every frame path over `symbols` (exact when the rest have probability 0)."""
    total = 0.0
    for path in itertools.product(symbols, repeat=log_probs.shape[0]):
        collapsed = tuple(s for s, _ in itertools.groupby(path) if s != blank)
        if collapsed == labels:
            total += math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
    return total


def test_choice_is_the_candidate_with_the_best_summed_per_frame_likelihood(trained_tiny_model: Path) -> None:
    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    ens = TempoEnsembleTranscriber(model, fe, tok, [0.75, 1.0])
    blank = ens.blank
    a, b = tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b")
    symbols = [blank, a, b]
    vocab = model.config.vocab_size
    overridden = 0
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        logits = []
        for frames in (5, 4):  # tempo 0.75 hears more frames than tempo 1
            row = torch.full((frames, vocab), -1e4)
            row[:, symbols] = 2.5 * torch.randn(frames, 3, generator=g)
            logits.append(row)
        log_probs = [torch.log_softmax(row.double(), -1) for row in logits]
        paths = [row.argmax(-1) for row in logits]
        candidates = [tuple(int(s) for s in torch.unique_consecutive(p) if int(s) != blank) for p in paths]
        scores = [sum(math.log(max(_ctc_probability(lp, c, blank, symbols), 1e-300)) / lp.shape[0] for lp in log_probs)
                  for c in candidates]
        best = max(range(2), key=lambda i: (scores[i], -i))
        assert ens.choose(logits) == tok.decode(paths[best].tolist())
        overridden += candidates[best] != candidates[1]
    assert overridden > 0  # the test exercised cases where tempo 1's own greedy transcript loses


def test_raw_waveform_models_and_beam_search_are_refused(trained_tiny_model: Path) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    with pytest.raises(ModelError, match="hop"):
        TempoEnsembleTranscriber(model, Wav2Vec2FeatureExtractor(), tok, [0.9, 1.0])
    with pytest.raises(ModelError, match="greedy"):
        build_transcriber(model, fe, tok, trained_tiny_model, decoder="beam", tempos=[0.9, 1.0])


def test_evaluate_script_records_the_tempos(trained_tiny_model: Path, tiny_corpus: Path, tmp_path: Path,
                                            run_script) -> None:
    out = tmp_path / "eval"
    proc = run_script("evaluate.py", "--model", trained_tiny_model, "--data", tiny_corpus / "test", "--output", out,
                      "--tempos", "0.875,1.125", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["decoding"]["tempos"] == [0.875, 1.0, 1.125]
    assert metrics["num_utterances"] == 12
    bad = run_script("evaluate.py", "--model", trained_tiny_model, "--data", tiny_corpus / "test", "--output", out,
                     "--tempos", "0.1")
    assert bad.returncode == 2 and "--tempos" in bad.stderr.strip().splitlines()[-1]


def test_transcribe_script_decodes_at_the_tempos(trained_tiny_model: Path, tiny_corpus: Path, run_script) -> None:
    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    files = sorted((tiny_corpus / "test").glob("*.wav"))[:3]
    proc = run_script("transcribe.py", "--model", trained_tiny_model, "--tempos", "0.875,1.125", *files)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    from pipeline.audio import read_audio

    expected = TempoEnsembleTranscriber(model, fe, tok, [0.875, 1.125]).transcribe(
        [read_audio(str(f), 16000)[0] for f in files])
    assert [r["audio"] for r in printed] == [str(f) for f in files]
    assert [r["text"] for r in printed] == expected


def test_files_longer_than_a_chunk_are_decoded_at_tempo_one(trained_tiny_model: Path, tiny_corpus: Path) -> None:
    import numpy as np

    from pipeline.evaluation.long_audio import LongAudioTranscriber

    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    audios = _test_audio(tiny_corpus, 6)
    long = np.concatenate(audios)
    ens, _ = build_transcriber(model, fe, tok, trained_tiny_model, tempos=[0.875, 1.125], chunk_seconds=4.0,
                               stride_seconds=1.0)
    assert isinstance(ens, LongAudioTranscriber) and isinstance(ens.base, TempoEnsembleTranscriber)
    plain = LongAudioTranscriber(Transcriber(model, fe, tok), 4.0, 1.0)
    short = audios[0][: 16000]
    texts = ens.transcribe([long, short])
    assert texts[0] == plain.transcribe([long])[0]
    assert texts[1] == TempoEnsembleTranscriber(model, fe, tok, [0.875, 1.125]).transcribe([short])[0]
