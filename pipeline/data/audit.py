"""Per-speaker recording statistics: what makes one speaker's clips unlike the others'.

A model fine-tuned on a few speakers fails on a new one for two kinds of reasons: the voice, or the
recording. This module measures the recording side, per speaker, so the two can be told apart before
any training: silence kept around the words, level, quantisation, DC offset. On FSDD it showed that
the unseen speaker's clips are cut at the word (no leading silence) and hold ~50 distinct sample
values (8-bit audio), where the training speakers keep 10-130 ms of silence and have thousands of levels.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.audio import frame_rms, read_audio, speech_span
from pipeline.config import DataSpec
from pipeline.data.sources import load_spec
from pipeline.errors import DataError

SPEECH_DB = -20.0  # a 10-ms frame within 20 dB of the clip's loudest counts as speech


def clip_stats(audio: np.ndarray, sample_rate: int) -> dict[str, float] | None:
    """One clip's statistics; None for digital silence."""
    frames = frame_rms(audio, sample_rate)
    rms = frames[0]
    span = speech_span(audio, sample_rate, SPEECH_DB, frames)
    peak = float(np.abs(audio).max())
    if span is None or peak <= 0.0:
        return None
    loudest = float(rms.max())
    return {
        "seconds": audio.size / sample_rate,
        "lead_ms": 1000.0 * span[0] / sample_rate,
        "trail_ms": 1000.0 * (audio.size - span[1]) / sample_rate,
        "first_frame_db": 20.0 * np.log10(max(float(rms[0]), 1e-10) / loudest),
        "peak_dbfs": 20.0 * np.log10(peak),
        "levels": float(np.unique(audio).size),
        "dc_of_peak": float(audio.mean()) / peak,
    }


def speaker_stats(spec: DataSpec) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Median clip statistics per speaker (rows without a speaker: "-"), and the rows that were skipped."""
    table = load_spec(spec, need_text=False)
    per: dict[str, list[dict[str, float]]] = defaultdict(list)
    skipped: list[str] = []
    for row in table:
        if row["problem"]:
            skipped.append(f"row {row['row']}: {row['problem']}")
            continue
        try:
            audio, sr = read_audio(row["audio"])
        except DataError as exc:
            skipped.append(f"row {row['row']}: {exc}")
            continue
        stats = clip_stats(audio, sr)
        if stats is None:
            skipped.append(f"row {row['row']}: silent")
            continue
        stats["sample_rate"] = float(sr)
        per[row["speaker"] or "-"].append(stats)
    out: dict[str, dict[str, Any]] = {}
    for speaker, rows in sorted(per.items()):
        out[speaker] = {"clips": len(rows), **{k: float(np.median([r[k] for r in rows])) for k in rows[0]}}
    return out, skipped
