"""`transcribe.py --data SPEC [--manifest OUT.csv --min-confidence C]`: a folder transcribed into pseudo-labels."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from pipeline.config import DataSpec
from pipeline.data.sources import load_spec


def test_a_folder_becomes_a_manifest_of_its_confident_transcripts(trained_tiny_model: Path, tiny_corpus: Path,
                                                                   run_script, tmp_path: Path) -> None:
    folder = tmp_path / "unlabelled"
    shutil.copytree(tiny_corpus / "test", folder, ignore=shutil.ignore_patterns("metadata.csv"))  # audio only
    (folder / "broken.wav").write_bytes(b"RIFF0000WAVEnot really")
    wavs = sorted(str(p) for p in folder.glob("0*.wav"))

    proc = run_script("transcribe.py", "--model", trained_tiny_model, "--data", folder, "--timestamps")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r["audio"] for r in rows) == wavs  # every readable file once
    assert "skipped" in proc.stderr and "broken.wav" in proc.stderr
    # the same words as transcribing the files by name; the confidence is their mean word confidence
    by_name = run_script("transcribe.py", "--model", trained_tiny_model, "--timestamps", *wavs)
    assert by_name.returncode == 0, by_name.stderr[-3000:]
    named = {r["audio"]: r for r in map(json.loads, by_name.stdout.splitlines())}
    for r in rows:
        assert r["words"] == named[r["audio"]]["words"] and r["text"] == named[r["audio"]]["text"]
        values = [w["confidence"] for w in r["words"]]
        assert r["confidence"] == (pytest.approx(sum(values) / len(values), abs=1e-4) if values else None)
    scored = sorted(r["confidence"] for r in rows if r["confidence"] is not None)
    assert len(scored) >= 4, "too few non-empty transcripts for the threshold below to mean anything"

    threshold = scored[len(scored) // 2]
    manifest = tmp_path / "labels.csv"
    proc = run_script("transcribe.py", "--model", trained_tiny_model, "--data", folder, "--manifest", manifest,
                      "--min-confidence", str(threshold))
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = list(csv.DictReader(open(manifest, encoding="utf-8")))
    want = {r["audio"]: r["text"] for r in rows if r["confidence"] is not None and r["confidence"] >= threshold}
    assert {r["audio"]: r["text"] for r in kept} == want and 0 < len(kept) < len(rows)
    assert f"{len(kept)} of {len(rows)} transcripts" in proc.stderr
    table = load_spec(DataSpec(path=str(manifest)))  # training data as it is
    assert sorted(table["audio"]) == sorted(want) and not any(table["problem"])


def test_data_and_manifest_options_are_checked(trained_tiny_model: Path, tiny_corpus: Path, run_script) -> None:
    wav = sorted((tiny_corpus / "test").glob("*.wav"))[0]
    for args, message in (
        (["--data", tiny_corpus / "test", wav], "give AUDIO files or --data SPEC (one of the two)"),
        ([], "give AUDIO files or --data SPEC (one of the two)"),
        (["--manifest", "x.csv", wav], "--manifest needs --data"),
        (["--data", tiny_corpus / "test", "--tempos", "0.9,1"], "leave out --tempos"),
        (["--data", tiny_corpus / "test", "--min-confidence", "0.5"], "--min-confidence (0-1) chooses"),
    ):
        proc = run_script("transcribe.py", "--model", trained_tiny_model, *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert message in proc.stderr.strip().splitlines()[-1]
