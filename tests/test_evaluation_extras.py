"""Alignments, bootstrap intervals, compare.py, n-gram LMs, beam search, long audio, the evaluate metric."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from pipeline.data.text import get_normalizer
from pipeline.errors import ModelError
from pipeline.evaluation.alignment import (
    align_words,
    breakdown,
    count_ops,
    duration_bins,
    error_pairs,
    top_errors,
)
from pipeline.evaluation.lm import (
    BOS,
    build_lm_dir,
    build_ngram_model,
    load_decoder,
    read_arpa,
    tokenizer_labels,
    write_arpa,
)
from pipeline.evaluation.metrics import error_rates
from pipeline.evaluation.stats import bootstrap_ci, confidence_intervals, paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
HAVE_LM_LIBS = all(importlib.util.find_spec(m) is not None for m in ("kenlm", "pyctcdecode"))
needs_lm_libs = pytest.mark.skipif(not HAVE_LM_LIBS, reason="pyctcdecode and kenlm are not installed "
                                   "(pip install kenlm pygtrie && pip install --no-deps pyctcdecode)")

SENTENCES = [
    "the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat saw the dog",
    "my dog can run", "the mat is red", "a red cat sat", "the dog ran on the mat", "can the cat run",
    "the log is on the mat", "my cat is red", "a dog saw my cat",
]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# WER/CER and alignments
# ---------------------------------------------------------------------------------------------
EDGE_PAIRS = [
    ("Hello, World!", "hello world"),
    ("", "an inserted phrase"),  # empty reference
    ("nothing was recognised here", ""),  # empty hypothesis
    ("Café crème, s'il vous plaît", "cafe creme sil vous plait"),  # accents, apostrophe
    ("東京 は 大きい", "東京 は 小さい"),  # CJK
    ("?!...", "uh"),  # punctuation only: empty after normalisation
    ("naïve coöperation", "naive cooperation"),
    ("the cat sat on the mat", "the hat sat the mat please"),
]


def test_wer_cer_equal_jiwer_on_normalised_edge_cases() -> None:
    norm = get_normalizer("default")
    refs = [norm(r) for r, _ in EDGE_PAIRS]
    hyps = [norm(h) for _, h in EDGE_PAIRS]
    assert "" in refs and "" in hyps
    ours = error_rates(refs, hyps)
    assert ours["wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert ours["cer"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
    for ref, hyp, u in zip(refs, hyps, ours["per_utterance"], strict=True):
        ops = count_ops(align_words(ref, hyp))
        assert ops["substitutions"] + ops["deletions"] + ops["insertions"] == u["word_errors"], (ref, hyp)
        assert ops["hits"] + ops["substitutions"] + ops["deletions"] == u["words"] == len(ref.split())
        if ref:  # jiwer scores a non-empty reference on its own
            w = jiwer.process_words(ref, hyp)
            assert (ops["substitutions"], ops["deletions"], ops["insertions"]) == (w.substitutions, w.deletions,
                                                                                 w.insertions)
            assert u["char_errors"] / u["chars"] == pytest.approx(jiwer.cer(ref, hyp), abs=1e-12)


def test_alignment_ops_on_a_known_pair() -> None:
    assert align_words("the cat sat on the mat", "the hat sat the mat please") == [
        ["=", "the", "the"], ["S", "cat", "hat"], ["=", "sat", "sat"], ["D", "on", None],
        ["=", "the", "the"], ["=", "mat", "mat"], ["I", None, "please"],
    ]
    assert align_words("", "") == []
    assert align_words("", "a b") == [["I", None, "a"], ["I", None, "b"]]
    assert align_words("a b", "") == [["D", "a", None], ["D", "b", None]]


def test_top_errors_breakdown_and_duration_bins() -> None:
    pairs = [("the cat sat", "the hat sat"), ("a cat", "a hat"), ("the dog", "dog"), ("run", "run now")]
    aligns = [align_words(r, h) for r, h in pairs]
    top = top_errors(aligns)
    assert top["substitutions"][0] == {"ref": "cat", "hyp": "hat", "count": 2}
    assert top["deletions"] == [{"ref": "the", "count": 1}] and top["insertions"] == [{"hyp": "now", "count": 1}]
    assert error_pairs(top)[0] == ("cat \u2192 hat", 2)
    rates = error_rates([r for r, _ in pairs], [h for _, h in pairs])["per_utterance"]
    rows = [{**u, "speaker": spk, "duration": d} for u, spk, d in zip(rates, ["x", "x", "y", "y"], [1.0, 3.0, 3.5, 25.0],
                                                                     strict=True)]
    by_spk = {g["speaker"]: g for g in breakdown(rows, "speaker")}
    assert by_spk["x"]["wer"] == pytest.approx(2 / 5) and by_spk["y"]["wer"] == pytest.approx(2 / 3)
    assert breakdown([{**r, "speaker": ""} for r in rows]) == []
    bins = {b["bin"]: b for b in duration_bins(rows)}
    assert bins["0\u20132 s"]["utterances"] == 1 and bins["2\u20134 s"]["utterances"] == 2
    assert bins["20\u201330 s"]["wer"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Bootstrap intervals and compare.py
# ---------------------------------------------------------------------------------------------
def fake_counts(n: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    words = rng.integers(4, 16, n)
    return rng.binomial(words, rate), words


def test_bootstrap_ci_contains_estimate_shrinks_and_is_seeded() -> None:
    e, w = fake_counts(100, 0.2, 0)
    ci = bootstrap_ci(e, w)
    assert ci[0] <= e.sum() / w.sum() <= ci[1]
    assert bootstrap_ci(e, w) == ci  # seeded
    e4, w4 = fake_counts(1600, 0.2, 1)
    ci4 = bootstrap_ci(e4, w4)
    assert ci4[0] <= e4.sum() / w4.sum() <= ci4[1]
    assert (ci4[1] - ci4[0]) < 0.6 * (ci[1] - ci[0])  # 16x the data: about 1/4 of the width
    # speakers that differ: the cluster bootstrap is wider than pretending utterances are independent
    rates = np.repeat([0.05, 0.4], 50)
    rng = np.random.default_rng(2)
    w2 = rng.integers(4, 16, 100)
    e2 = rng.binomial(w2, rates)
    spk = [f"s{i // 10}" for i in range(100)]
    flat, clustered = bootstrap_ci(e2, w2), bootstrap_ci(e2, w2, clusters=spk)
    assert clustered[1] - clustered[0] > flat[1] - flat[0]
    rows = [{"word_errors": a, "words": b, "char_errors": a, "chars": b, "speaker": s} for a, b, s in zip(e2, w2, spk, strict=True)]
    m = confidence_intervals(rows)
    assert m["wer_ci95"] == pytest.approx(clustered) and "10 speakers" in m["ci_method"]
    assert "utterances" in confidence_intervals([{**r, "speaker": ""} for r in rows])["ci_method"]


def test_paired_bootstrap() -> None:
    e, w = fake_counts(200, 0.3, 3)
    better = np.minimum(e, np.random.default_rng(4).binomial(w, 0.1))
    out = paired_bootstrap(e, better, w)
    assert out["prob_b_better"] > 0.99 and out["diff"] < 0 and out["diff_ci95"][1] < 0
    same = paired_bootstrap(e, e, w)
    assert same["prob_b_better"] == 0.0 and same["diff"] == 0.0


def write_eval(folder: Path, refs: list[str], hyps: list[str], speakers: list[str]) -> None:
    folder.mkdir(parents=True)
    rates = error_rates(refs, hyps)
    with open(folder / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i, (r, h, s, u) in enumerate(zip(refs, hyps, speakers, rates["per_utterance"], strict=True)):
            f.write(json.dumps({"audio": f"/data/{i}.wav", "reference": r, "hypothesis": h, "speaker": s, **u}) + "\n")
    (folder / "metrics.json").write_text(json.dumps({"wer": rates["wer"], "normalizer": "default"}))


def test_compare_script(tmp_path: Path, run_script) -> None:
    rng = np.random.default_rng(5)
    vocab = "alpha beta gamma delta eps zeta eta theta iota kappa".split()
    refs = [" ".join(rng.choice(vocab, 6)) for _ in range(120)]

    def corrupt(ref: str, p: float) -> str:
        return " ".join(w if rng.random() > p else "xx" for w in ref.split())

    speakers = [f"spk{i % 8}" for i in range(120)]
    write_eval(tmp_path / "A", refs, [corrupt(r, 0.4) for r in refs], speakers)
    write_eval(tmp_path / "B", refs, [corrupt(r, 0.1) for r in refs], speakers)
    result = load_script("compare.py").compare(str(tmp_path / "A"), str(tmp_path / "B"))
    assert result["prob_b_better"] > 0.99
    assert result["b"]["wer"] < result["a"]["wer"] and result["wer_diff_ci95"][1] < 0
    assert result["num_utterances"] == 120 and "8 speakers" in result["method"]
    # different references: one-line error, exit code 2
    write_eval(tmp_path / "C", ["other words"] + refs[1:], refs, speakers)
    proc = run_script("compare.py", tmp_path / "A", tmp_path / "C")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "different references" in proc.stderr


# ---------------------------------------------------------------------------------------------
# n-gram LM
# ---------------------------------------------------------------------------------------------
def check_normalised(model, contexts) -> None:
    vocab = [w for w in model.vocabulary if w != BOS]
    for ctx in contexts:
        total = sum(10 ** model.log10_prob(w, ctx) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4), ctx


@pytest.mark.parametrize("order", [2, 3, 4])
def test_arpa_is_valid_and_normalised(tmp_path: Path, order: int) -> None:
    model = build_ngram_model(SENTENCES * 3 + ["a lone sentence once"], order)
    path = tmp_path / "lm.arpa"
    write_arpa(model, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("\\data\\\n") and text.rstrip().endswith("\\end\\")
    for n in range(1, order + 1):
        assert f"ngram {n}=" in text and f"\\{n}-grams:" in text
    back = read_arpa(path)
    assert back.order == order and {"<s>", "</s>", "<unk>"} <= set(back.vocabulary)
    contexts = [(), ("<s>",), ("the",), ("<s>", "the"), ("the", "cat"), ("cat", "sat"), ("unseen", "words"),
                ("the", "the", "the")]
    check_normalised(back, contexts)
    if importlib.util.find_spec("kenlm") is None:
        pytest.skip("kenlm is not installed: ARPA checked with our own parser only")
    import kenlm

    k = kenlm.Model(str(path))
    assert k.order == order
    for sentence in ("the cat sat on the mat", "a dog ran", "unknown words here"):
        ours = sum(back.log10_prob(w, (BOS, *sentence.split())[:i + 1]) for i, w in enumerate([*sentence.split(), "</s>"]))
        assert k.score(sentence, bos=True, eos=True) == pytest.approx(ours, abs=1e-4)


def test_order_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        build_ngram_model(SENTENCES, 1)


# ---------------------------------------------------------------------------------------------
# Beam search with the LM on the tiny trained model
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_with_lm(trained_tiny_model: Path, tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model_with_lm") / "model"
    shutil.copytree(trained_tiny_model, out, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    build_lm = load_script("build_lm.py")
    argv = sys.argv
    try:
        sys.argv = ["build_lm.py", "--text", str(tiny_corpus / "train"), "--model", str(out), "--order", "3",
                    "--output", str(out)]
        build_lm.main()
    finally:
        sys.argv = argv
    return out


def test_build_lm_layout(model_with_lm: Path) -> None:
    lm = model_with_lm / "language_model"
    assert sorted(p.name for p in lm.iterdir()) == ["attrs.json", "lm.arpa", "unigrams.txt"]
    assert set(json.loads((lm / "attrs.json").read_text())) == {"alpha", "beta", "unk_score_offset", "score_boundary"}
    alphabet = json.loads((model_with_lm / "alphabet.json").read_text())
    vocab = json.loads((model_with_lm / "vocab.json").read_text(encoding="utf-8"))
    assert alphabet["is_bpe"] is False and len(alphabet["labels"]) == len(vocab)
    assert alphabet["labels"][vocab["<pad>"]] == "" and alphabet["labels"][vocab["|"]] == " "
    assert json.loads((model_with_lm / "preprocessor_config.json").read_text())["processor_class"] == \
        "Wav2Vec2ProcessorWithLM"
    info = json.loads((model_with_lm / "lm_info.json").read_text())
    assert info["order"] == 3 and info["normalizer"] == "default" and info["sentences"] == 40
    check_normalised(read_arpa(lm / "lm.arpa"), [(), ("<s>",)])


@needs_lm_libs
def test_beam_search_with_lm_runs_and_pipeline_loads_it(model_with_lm: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    import soundfile as sf
    import transformers

    from pipeline.config import DataSpec
    from pipeline.evaluation.evaluate import evaluate_model

    torch.set_num_threads(1)
    metrics = evaluate_model(str(model_with_lm), DataSpec(path=str(tiny_corpus / "test")), tmp_path / "eval",
                             batch_seconds=8, decoder="beam", beam_width=8)
    assert metrics["decoding"]["decoder"] == "beam" and metrics["decoding"]["lm"] == str(model_with_lm)
    assert metrics["decoding"]["lm_order"] == 3 and 0 <= metrics["cer"]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all("alignment" in r for r in rows)
    assert (tmp_path / "eval" / "report.html").is_file()

    asr = transformers.pipeline("automatic-speech-recognition", model=str(model_with_lm), device="cpu")
    assert asr.type == "ctc_with_lm"
    first = sorted((tiny_corpus / "test").glob("*.wav"))[0]
    audio, sr = sf.read(first, dtype="float32")
    assert isinstance(asr({"raw": audio, "sampling_rate": sr})["text"], str)


@needs_lm_libs
def test_lm_alphabet_preflight(model_with_lm: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_with_lm))
    load_decoder(tok, model_with_lm)  # matches
    bad = tmp_path / "bad"
    shutil.copytree(model_with_lm / "language_model", bad / "language_model")
    labels = tokenizer_labels(tok)
    labels[1], labels[2] = labels[2], labels[1]
    (bad / "alphabet.json").write_text(json.dumps({"labels": labels, "is_bpe": False}))
    with pytest.raises(ModelError, match="does not match the tokenizer"):
        load_decoder(tok, bad)
    foreign = tmp_path / "foreign"
    build_lm_dir(["ΑΒΓ δεζ ηθι", "κλμ νξο"], foreign, order=2)
    with pytest.raises(ModelError, match="does not match the tokenizer"):
        load_decoder(tok, foreign)


@needs_lm_libs
def test_lm_decodes_a_subword_vocabulary(tmp_path: Path) -> None:
    """A byte-pair CTC vocabulary ("▁" starts a word): pyctcdecode's BPE alphabet, LM words checked."""
    from pipeline.models.asr import subword_tokenizer

    tok = subword_tokenizer(SENTENCES, 40, blank_last=True)
    labels = tokenizer_labels(tok)
    assert labels[tok.pad_token_id] == "" and labels[tok.unk_token_id] == "\u2581\u2047\u2581"
    assert any(lab.startswith("\u2581") and len(lab) > 2 for lab in labels)
    build_lm_dir(SENTENCES, tmp_path, order=2, labels=labels)
    assert json.loads((tmp_path / "alphabet.json").read_text())["is_bpe"] is True
    decoder = load_decoder(tok, tmp_path)
    ids = tok(SENTENCES[0]).input_ids
    frames = [i for t in ids for i in (t, t, tok.pad_token_id)]  # each piece twice, then a blank
    logits = np.full((len(frames), len(tok)), -10.0, dtype=np.float32)
    logits[np.arange(len(frames)), frames] = 0.0
    assert decoder.decode(logits, beam_width=8).strip() == SENTENCES[0]
    foreign = tmp_path / "foreign"
    build_lm_dir(["ΑΒΓ δεζ ηθι", "κλμ νξο"], foreign, order=2)
    with pytest.raises(ModelError, match="does not match the tokenizer"):
        load_decoder(tok, foreign)


# ---------------------------------------------------------------------------------------------
# Long audio
# ---------------------------------------------------------------------------------------------
def test_chunked_logits_equal_unchunked_for_a_local_model() -> None:
    from conftest import local_wav2vec2

    from pipeline.evaluation.inference import Transcriber
    from pipeline.evaluation.long_audio import (
        LongAudioTranscriber,
        chunk_starts,
        chunked_logits,
        forward_logits,
    )

    torch.manual_seed(0)
    # no attention layers: every output frame sees a few dozen samples, far less than the stride
    model, fe, tok = local_wav2vec2("abc def")
    tr = Transcriber(model, fe, tok, batch_seconds=4)
    audio = (np.random.default_rng(0).standard_normal(16000 * 5 + 123) * 0.1).astype(np.float32)
    assert len(chunk_starts(len(audio), 16000, 3200, 3200)) > 4
    full = forward_logits(tr, [audio])[0]
    chunked = chunked_logits(tr, audio, chunk_seconds=1.0, stride_seconds=0.2)
    assert chunked.shape == full.shape
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    long = LongAudioTranscriber(tr, chunk_seconds=1.0, stride_seconds=0.2)
    assert long.transcribe([audio, audio[:8000]]) == tr.transcribe([audio, audio[:8000]])


def test_long_file_transcript_matches_unchunked(trained_tiny_model: Path, tiny_corpus: Path) -> None:
    from pipeline.audio import read_audio
    from pipeline.evaluation.evaluate import load_model_dir
    from pipeline.evaluation.inference import Transcriber
    from pipeline.evaluation.long_audio import LongAudioTranscriber, chunked_logits, forward_logits

    torch.set_num_threads(1)
    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    with open(tiny_corpus / "test" / "metadata.csv", encoding="utf-8") as f:
        names = [r["file_name"] for r in csv.DictReader(f)][:8]
    audio = np.concatenate([read_audio(str(tiny_corpus / "test" / n), 16000)[0] for n in names])
    tr = Transcriber(model, fe, tok)
    full = forward_logits(tr, [audio])[0]
    chunked = chunked_logits(tr, audio, chunk_seconds=4.0, stride_seconds=1.0)
    assert chunked.shape == full.shape  # frames line up one to one
    agree = (chunked.argmax(-1) == full.argmax(-1)).float().mean().item()
    assert agree > 0.7, agree
    text_full = tr.transcribe([audio])[0]
    text_chunked = LongAudioTranscriber(tr, 4.0, 1.0).transcribe([audio])[0]
    assert jiwer.cer(text_full, text_chunked) < 0.2 if text_full else text_chunked == ""


# ---------------------------------------------------------------------------------------------
# evaluate integration
# ---------------------------------------------------------------------------------------------
def test_wer_metric_loads_offline_and_matches() -> None:
    from pipeline.evaluation import WER_METRIC_DIR, load_wer_metric

    assert (WER_METRIC_DIR / "wer_metric.py").is_file()
    metric = load_wer_metric()
    refs = [r for r, _ in EDGE_PAIRS]
    hyps = [h for _, h in EDGE_PAIRS]
    out = metric.compute(predictions=hyps, references=refs, normalizer="default")
    norm = get_normalizer("default")
    expected = error_rates([norm(r) for r in refs], [norm(h) for h in hyps])
    assert out["wer"] == pytest.approx(expected["wer"]) and out["cer"] == pytest.approx(expected["cer"])
    assert out["wer"] == pytest.approx(jiwer.wer([norm(r) for r in refs], [norm(h) for h in hyps]))
    raw = metric.compute(predictions=["Hello"], references=["hello"], normalizer="none")
    assert raw["wer"] == 1.0 and not math.isnan(raw["cer"])


def test_compare_script_reads_round_trip_folders(tmp_path: Path, run_script) -> None:
    """evaluate_tts.py's utterances.jsonl: one system's transcripts, scored here, paired by sentence."""
    refs = [f"the {w} was number six" for w in "cat dog cow pig hen fox owl elk ram yak".split()] * 3

    def write(folder: Path, tts: list[str]) -> None:
        folder.mkdir()
        rows = [{"text": r, "reference": r, "tts_hypothesis": t, "griffin_lim_hypothesis": r, "recording_hypothesis": r}
                for r, t in zip(refs, tts, strict=True)]
        (folder / "utterances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    write(tmp_path / "A", [r.replace("number six", "numb sick") for r in refs])  # 2 of 5 words wrong
    write(tmp_path / "B", [r.replace("six", "sick") for r in refs])  # 1 of 5
    compare = load_script("compare.py").compare
    result = compare(str(tmp_path / "A"), str(tmp_path / "B"))
    assert result["a"]["wer"] == pytest.approx(0.4) and result["b"]["wer"] == pytest.approx(0.2)
    assert result["wer_diff"] == pytest.approx(-0.2) and result["num_utterances"] == 30
    same = compare(str(tmp_path / "A"), str(tmp_path / "B"), system="griffin_lim")
    assert same["a"]["wer"] == same["b"]["wer"] == 0.0
    (tmp_path / "C").mkdir()
    (tmp_path / "C" / "utterances.jsonl").write_text(json.dumps({"text": "a", "reference": "a"}) + "\n")
    proc = run_script("compare.py", tmp_path / "A", tmp_path / "C", "--system", "recording")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no recording_hypothesis" in proc.stderr
