"""Per-speaker recording statistics (scripts/audit_speakers.py) on generated clips with known properties."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 8000


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def make_folder(root: Path) -> Path:
    """Speaker `padded`: 100 ms of faint noise either side of the tone, 16-bit. Speaker `cut`: the tone
    alone, 8-bit quantised with a DC offset of one step. One row points to a file that is not audio."""
    rng = np.random.default_rng(0)
    root.mkdir()
    rows = []
    for i in range(3):
        quiet = (1e-4 * rng.standard_normal(int(0.1 * SR))).astype(np.float32)
        voiced = tone(0.3) + (1e-3 * rng.standard_normal(int(0.3 * SR))).astype(np.float32)  # a real signal's detail
        sf.write(root / f"p{i}.wav", np.concatenate([quiet, voiced, quiet]), SR, subtype="PCM_16")
        rows.append((f"p{i}.wav", "padded"))
        cut = np.round(tone(0.3) * 64) / 128 - 1 / 128
        sf.write(root / f"c{i}.wav", cut.astype(np.float32), SR, subtype="FLOAT")
        rows.append((f"c{i}.wav", "cut"))
    (root / "bad.wav").write_bytes(b"not audio at all")
    rows.append(("bad.wav", "cut"))
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "text", "speaker"])
        w.writerows((name, "x", spk) for name, spk in rows)
    return root


def test_audit_tells_cut_quantised_clips_from_padded_ones(tmp_path: Path, run_script: Callable) -> None:
    folder = make_folder(tmp_path / "corpus")
    proc = run_script("audit_speakers.py", str(folder), "--output", str(tmp_path / "audit.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| padded |" in proc.stdout and "1 rows skipped" in proc.stdout and "bad.wav" in proc.stdout
    stats = json.loads((tmp_path / "audit.json").read_text(encoding="utf-8"))[str(folder)]["speakers"]
    padded, cut = stats["padded"], stats["cut"]
    assert padded["clips"] == cut["clips"] == 3
    assert padded["lead_ms"] == padded["trail_ms"] == 100.0 and cut["lead_ms"] == cut["trail_ms"] == 0.0
    assert padded["first_frame_db"] < -60 < -3 < cut["first_frame_db"]
    assert padded["levels"] > 1000 and cut["levels"] <= 65
    assert abs(padded["dc_of_peak"]) < 1e-3 and cut["dc_of_peak"] < -0.01
    assert padded["seconds"] == 0.5 and cut["seconds"] == 0.3 and padded["sample_rate"] == SR
