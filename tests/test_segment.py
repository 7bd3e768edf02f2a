"""Cutting long recordings into training utterances (`scripts/segment.py`, `pipeline.data.segment`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.data.segment import segments, split_words

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "asr" / "conformer_quickstart.yaml"


def words(*spans: tuple[str, float, float]) -> list[dict]:
    return [{"word": w, "start": s, "end": e, "confidence": 0.5} for w, s, e in spans]


def test_split_words_cuts_at_the_widest_pauses_until_every_group_fits() -> None:
    ws = words(("a", 0.0, 1.0), ("b", 1.1, 2.0), ("c", 2.9, 4.0), ("d", 4.2, 5.0), ("e", 5.5, 6.0), ("f", 6.1, 9.5))
    assert split_words(ws, 100.0) == [ws]
    groups = split_words(ws, 4.0)
    assert [[w["word"] for w in g] for g in groups] == [["a", "b"], ["c", "d"], ["e", "f"]]  # gaps 0.9, then 0.5
    assert [w for g in groups for w in g] == ws
    assert all(g[-1]["end"] - g[0]["start"] <= 4.0 for g in groups)
    assert split_words(words(("long", 0.0, 9.0)), 4.0) == [words(("long", 0.0, 9.0))]  # a word stands alone
    assert split_words([], 4.0) == []


def test_segments_take_some_of_each_pause_and_never_overlap() -> None:
    ws = words(("a", 0.3, 1.0), ("b", 1.1, 2.0), ("c", 2.1, 3.0), ("d", 3.05, 3.5))
    segs = segments(ws, duration=3.6, max_seconds=2.0, pad=0.15)
    assert [s.text for s in segs] == ["a b", "c d"]
    assert segs[0].start == 0.15 and segs[-1].end == 3.6  # pad, within the recording
    assert segs[0].end == 2.05 == segs[1].start  # a 0.1-s pause is shared at its middle
    assert segs[0].confidence == 0.5


def test_script_cuts_recordings_into_an_audiofolder_that_trains(trained_tiny_model: Path, tiny_corpus: Path,
                                                                tiny_recipe_overrides, run_script,
                                                                tmp_path: Path) -> None:
    rows = list(csv.DictReader(open(tiny_corpus / "test" / "metadata.csv", encoding="utf-8")))
    long = tmp_path / "long"
    long.mkdir()
    texts = {}
    for k in range(2):
        parts, said = [], []
        for row in rows[6 * k:6 * k + 6]:
            audio, sr = sf.read(tiny_corpus / "test" / row["file_name"], dtype="float32")
            parts += [audio, np.zeros(int(0.4 * sr), dtype=np.float32)]
            said.append(row["text"])
        rate = 22050 if k else sr  # segments are cut from the recording at its own rate
        audio = np.concatenate(parts)
        if rate != sr:
            import torch
            import torchaudio.functional as AF

            audio = AF.resample(torch.from_numpy(audio), sr, rate).numpy()
        sf.write(long / f"talk{k}.wav", audio, rate)
        texts[f"talk{k}"] = " ".join(said)
        (long / f"talk{k}.txt").write_text(texts[f"talk{k}"].upper() + "\n", encoding="utf-8")  # normalised
    sf.write(long / "digits.wav", audio[: 3 * rate], rate)
    (long / "digits.txt").write_text("call 911 now\n", encoding="utf-8")
    sf.write(long / "untranscribed.wav", audio[: rate], rate)

    out = tmp_path / "segments"
    proc = run_script("segment.py", "--model", trained_tiny_model, "--output", out, "--max-seconds", "5",
                      *sorted(long.glob("*.wav")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.splitlines()[0])
    report = json.loads((out / "segment_report.json").read_text())
    assert summary["skipped"] == 2 and {Path(s["audio"]).name: s["reason"] for s in report["skipped"]}.keys() == {
        "digits.wav", "untranscribed.wav"}
    reasons = " ".join(s["reason"] for s in report["skipped"])
    assert "cannot spell the transcript (characters '19')" in reasons and "untranscribed.txt" in reasons

    table = list(csv.DictReader(open(out / "metadata.csv", encoding="utf-8")))
    assert len(table) == summary["segments"] > 2
    for stem, text in texts.items():
        mine = [r for r in table if r["speaker"] == stem]
        assert " ".join(r["text"] for r in mine) == text  # every word once, in order
        ends = [(float(r["start"]), float(r["end"])) for r in mine]
        assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:], strict=False)) and ends[0][0] >= 0
        for r, (start, end) in zip(mine, ends, strict=True):
            info = sf.info(out / r["file_name"])
            assert info.samplerate == (22050 if stem == "talk1" else 16000)
            assert abs(info.frames - (end - start) * info.samplerate) <= 1
            assert end - start <= 5 + 2 * 0.15 or len(r["text"].split()) == 1
            assert 0 <= float(r["confidence"]) <= 1 and r["source"].endswith(f"{stem}.wav")

    # the folder is training data as it is
    proc = run_script("train.py", str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"output_dir={tmp_path / 'run'}",
                      f"data.train={out}", "data.eval=null", "train.max_steps=2", "train.batch_seconds=10",
                      "data.max_duration=20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "train_results.json").read_text())["steps"] == 2


def test_min_confidence_drops_segments_and_lists_them(trained_tiny_model: Path, tiny_corpus: Path, run_script,
                                                      tmp_path: Path) -> None:
    row = next(csv.DictReader(open(tiny_corpus / "test" / "metadata.csv", encoding="utf-8")))
    audio = tmp_path / "one.wav"
    audio.write_bytes((tiny_corpus / "test" / row["file_name"]).read_bytes())
    text = tmp_path / "words.txt"
    text.write_text(row["text"], encoding="utf-8")
    proc = run_script("segment.py", "--model", trained_tiny_model, "--output", tmp_path / "out", "--text", text,
                      "--min-confidence", "1", audio)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "segment_report.json").read_text())
    assert report["segments"] == 0 and len(report["dropped"]) == 1 and report["dropped"][0]["text"] == row["text"]
    assert (tmp_path / "out" / "metadata.csv").read_text().strip() == "file_name,text,speaker,source,start,end,confidence"
    proc = run_script("segment.py", "--model", trained_tiny_model, "--output", tmp_path / "o2", "--text", text,
                      audio, audio)
    assert proc.returncode == 2 and "--text names the transcript of one recording" in proc.stderr


def test_a_segment_is_as_confident_as_its_weakest_five_words() -> None:
    from pipeline.data.segment import weakest_run

    confidences = [0.9] * 6 + [0.0, 0.0] + [0.9] * 6
    ws = [{"word": "w", "start": i, "end": i + 0.5, "confidence": c} for i, c in enumerate(confidences)]
    assert weakest_run(ws) == pytest.approx(3 * 0.9 / 5)  # a window holding both weak words
    assert weakest_run(ws[:3]) == pytest.approx(0.9) and weakest_run([]) == 0.0  # fewer words: their mean
    assert segments(ws, 20.0, max_seconds=100.0)[0].confidence == round(3 * 0.9 / 5, 4)


def test_a_recording_too_long_to_align_at_once_is_refused(trained_tiny_model: Path, tiny_corpus: Path) -> None:
    from pipeline.data.segment import align_words
    from pipeline.errors import DataError
    from pipeline.evaluation.evaluate import load_model_dir
    from pipeline.evaluation.inference import Transcriber

    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    transcriber = Transcriber(model, fe, tok)
    row = next(csv.DictReader(open(tiny_corpus / "test" / "metadata.csv", encoding="utf-8")))
    audio = sf.read(tiny_corpus / "test" / row["file_name"], dtype="float32")[0]
    assert [w["word"] for w in align_words(transcriber, audio, row["text"], "one.wav")] == row["text"].split()
    with pytest.raises(DataError, match=r"one.wav: 0 minutes with a \d+-token transcript need a .* GB alignment"):
        align_words(transcriber, audio, row["text"], "one.wav", max_cells=1000)
    with pytest.raises(DataError, match="one.wav: the transcript .* is too long for the audio"):
        align_words(transcriber, audio[:1600], row["text"], "one.wav")
