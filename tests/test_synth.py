"""Tests for the espeak-ng wrapper, the sentence generator and the synthetic corpus writer."""

from __future__ import annotations

import csv
import json
import random
import re

import numpy as np
import pytest
import soundfile as sf

from pipeline.errors import DataError
from pipeline.synth import espeak
from pipeline.synth.corpus import split_voices, synthesize_corpus
from pipeline.synth.sentences import DIGITS, WORDS, make_sentences


def test_list_voices_load_and_are_english_accent_variant_pairs() -> None:
    voices = espeak.list_voices()
    assert voices and len(voices) == len(set(voices))
    assert all(v.split("+")[0] in espeak.ACCENTS and "+" in v for v in voices)
    assert "en-us+f3" in voices
    voices.clear()  # callers get a copy: the cache must survive this
    assert espeak.list_voices()


def test_synthesize_audio_and_phoneme_spans() -> None:
    syn = espeak.synthesize("hello world one two three", "en-us+f3", rate=175, pitch=50)
    assert syn.sample_rate == 22050
    assert syn.audio.dtype == np.float32 and syn.audio.ndim == 1
    assert np.isfinite(syn.audio).all() and np.abs(syn.audio).max() <= 1.0
    assert 0.7 < syn.duration < 4.0
    assert np.abs(syn.audio).max() > 0.05
    assert len(syn.phonemes) >= 10
    assert syn.phonemes[0][0] == "h"
    n = len(syn.audio)
    starts = [s for _, s, _ in syn.phonemes]
    assert starts == sorted(starts)
    assert all(0 <= s <= e <= n and name for name, s, e in syn.phonemes)
    # faster speech is shorter: parameters are applied on every call, not sticky
    fast = espeak.synthesize("hello world one two three", "en-us+f3", rate=300)
    again = espeak.synthesize("hello world one two three", "en-us+f3", rate=175)
    assert fast.duration < 0.8 * again.duration


def test_many_voice_changes_do_not_drop_first_phonemes() -> None:
    for _ in range(60):  # each voice change queues an event in espeak's small event list
        espeak.phonemize("hi", voice="en-gb-scotland+m2")
    syn = espeak.synthesize("hello world", "en-us+m3")
    assert syn.phonemes[0][0] == "h"


@pytest.mark.parametrize("voice", ["en-us+nosuchvariant", "xx-nosuchlang", "en-gb"])
def test_bad_voice_raises_value_error_naming_it(voice: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(voice))):
        espeak.synthesize("hello", voice)


def test_phonemize() -> None:
    assert espeak.phonemize("hello world") == "həlˈoʊ wˈɜːld"
    assert espeak.phonemize("hello world", ipa=False) == "h@l'oU w'3:ld"


def test_sentences_deterministic_and_clean() -> None:
    assert 280 <= len(WORDS) <= 330 and len(set(WORDS)) == len(WORDS)
    assert set(DIGITS) <= set(WORDS)
    assert all(re.fullmatch(r"[a-z']+", w) for w in WORDS)
    a = make_sentences(300, random.Random(3))
    assert a == make_sentences(300, random.Random(3))
    assert a != make_sentences(300, random.Random(4))
    vocab = set(WORDS)
    for s in a:
        words = s.split(" ")
        assert 3 <= len(words) <= 9 and set(words) <= vocab
    assert all(len(s.split()) == 2 for s in make_sentences(20, random.Random(0), min_words=2, max_words=2))


def test_split_voices_holds_out_whole_families() -> None:
    voices = espeak.list_voices()
    for seed in range(5):
        train, test, held = split_voices(voices, random.Random(seed))
        assert train and test and not set(train) & set(test)
        train_families = {espeak.variant_family(v.split("+")[1]) for v in train}
        assert not {espeak.variant_family(v) for v in held} & train_families
        assert any(v in espeak.FEMALE_VARIANTS for v in held)


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["file_name", "text", "speaker"]
        return list(reader)


def test_tiny_corpus_layout_rerun_and_mismatch(tmp_path) -> None:
    out = tmp_path / "synth"
    info = synthesize_corpus(out, n_train=6, n_test=3, seed=1, sample_rate=16000, progress=False)
    assert not info["reused"] and info["counts"] == {"train": 6, "test": 3}
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    speakers = {}
    for split, n in (("train", 6), ("test", 3)):
        rows = _rows(out / split / "metadata.csv")
        assert len(rows) == n
        for row in rows:
            assert re.fullmatch(r"[a-z']+( [a-z']+)*", row["text"])
            audio_info = sf.info(out / split / row["file_name"])
            assert audio_info.samplerate == 16000 and audio_info.channels == 1
            assert audio_info.subtype == "PCM_16" and 0.3 < audio_info.duration < 8.0
        speakers[split] = {r["speaker"] for r in rows}
    assert not speakers["train"] & speakers["test"]
    recorded = json.loads((out / "corpus.json").read_text())
    assert recorded["sample_rate"] == 16000 and recorded["seed"] == 1
    assert not set(recorded["voices"]["train"]) & set(recorded["voices"]["test"])
    assert speakers["test"] <= set(recorded["voices"]["test"])
    assert recorded["hours"]["train"] > 0

    stamp = (out / "corpus.json").stat().st_mtime_ns
    again = synthesize_corpus(out, n_train=6, n_test=3, seed=1, sample_rate=16000, progress=False)
    assert again["reused"] and (out / "corpus.json").stat().st_mtime_ns == stamp

    with pytest.raises(DataError, match="delete it"):
        synthesize_corpus(out, n_train=6, n_test=3, seed=2, sample_rate=16000, progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="pick another folder"):
        synthesize_corpus(tmp_path / "junk", n_train=2, n_test=1, progress=False)


def test_two_workers_match_serial_metadata(tmp_path) -> None:
    a = synthesize_corpus(tmp_path / "a", n_train=4, n_test=2, seed=5, progress=False)
    b = synthesize_corpus(tmp_path / "b", n_train=4, n_test=2, seed=5, progress=False, workers=2)
    assert a["hours"]["train"] > 0 and b["synthesis"]["workers"] == 2
    for split in ("train", "test"):
        assert _rows(tmp_path / "a" / split / "metadata.csv") == _rows(
            tmp_path / "b" / split / "metadata.csv"
        )
        assert len(list((tmp_path / "b" / split).glob("*.wav"))) == a["counts"][split]


def test_demo_on_a_corpus_of_other_sizes_says_how_to_go_on(tmp_path) -> None:
    """An earlier demo's data/synth (other sizes) stops the demo with one line that says what to do, untouched."""
    from conftest import run_python

    synthesize_corpus(tmp_path / "synth", n_train=4, n_test=2, seed=0, progress=False)
    before = sorted(p.name for p in (tmp_path / "synth" / "train").iterdir())
    proc = run_python(["-c", "from pipeline.demo import main; main()", "--corpus", tmp_path / "synth",
                       "--train-utterances", "5", "--test-utterances", "2", "--tts-minutes", "0"], timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "'n_train': 4" in errors[0] and "make clean" in errors[0] and "--train-utterances" in errors[0], errors[0]
    assert sorted(p.name for p in (tmp_path / "synth" / "train").iterdir()) == before


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    import pipeline.synth.corpus as corpus

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(corpus, "render", boom)
    with pytest.raises(RuntimeError, match="boom"):
        synthesize_corpus(tmp_path / "c", n_train=2, n_test=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bucketed_resample_matches_torchaudio() -> None:
    import torch
    import torchaudio.functional as AF

    from pipeline.synth.corpus import resample

    x = np.random.default_rng(0).standard_normal(12345).astype(np.float32)
    for sr in (8000, 16000, 24000):
        ref = AF.resample(torch.from_numpy(x), 22050, sr).numpy()
        np.testing.assert_array_equal(resample(x, 22050, sr), ref)
