"""Measure, normalise and filter a table once; report every row that cannot be used.

Each audio file is decoded once (so truncated or corrupt files fail here, not mid-run) and its
duration cached with `datasets` (`map(..., cache_file_name=...)`, keyed by the files' paths, sizes
and modification times). Rows that cannot be used are dropped and listed, with a reason, in a
`SkipReport`; with `on_bad_rows="error"` the first one stops the run instead.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from pipeline.audio import probe
from pipeline.errors import DataError

PROBE_VERSION = 1


@dataclass
class SkipReport:
    """Rows dropped from each split, with reasons; written to `data_report.json`."""

    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def add_split(self, name: str, source: str, rows: int, kept: int, seconds: float) -> None:
        reasons = Counter(s["reason"].split(" (")[0] for s in self.skipped if s["split"] == name)
        self.splits[name] = {
            "source": source, "rows": rows, "kept": kept, "skipped": rows - kept,
            "hours": round(seconds / 3600, 4), "skipped_by_reason": dict(reasons),
        }

    def skip(self, split: str, source: str, row: int, audio: str, reason: str) -> None:
        self.skipped.append({"split": split, "source": source, "row": row, "audio": audio, "reason": reason})

    def count(self, split: str | None = None) -> int:
        return sum(1 for s in self.skipped if split is None or s["split"] == split)

    def summary(self) -> str:
        parts = []
        for name, s in self.splits.items():
            line = f"{name}: {s['kept']}/{s['rows']} utterances, {s['hours']:.2f} h"
            if s["skipped"]:
                line += f", skipped {s['skipped']} ({', '.join(f'{k}: {v}' for k, v in s['skipped_by_reason'].items())})"
            parts.append(line)
        return "; ".join(parts)

    def write(self, path: str | Path) -> None:
        from pipeline.io import write_json

        write_json(path, {"splits": self.splits, "skipped": self.skipped})


def _files_key(ds: datasets.Dataset, decode: bool) -> str:
    h = hashlib.sha256(f"v{PROBE_VERSION}:{decode}".encode())
    for ref, problem in zip(ds["audio"], ds["problem"], strict=True):
        if isinstance(ref, str):
            try:
                st = os.stat(ref)
                h.update(f"{ref}\0{st.st_size}\0{st.st_mtime_ns}\0{problem}\n".encode())
            except OSError:
                h.update(f"{ref}\0missing\0{problem}\n".encode())
        else:  # Hub rows: the table's own fingerprint covers the bytes
            h.update(ds._fingerprint.encode())
            break
    return h.hexdigest()[:24]


def _probe_batch(batch: dict[str, list[Any]], decode: bool) -> dict[str, list[Any]]:
    durations, rates, problems = [], [], []
    for ref, problem in zip(batch["audio"], batch["problem"], strict=True):
        duration, rate = 0.0, 0
        if not problem:
            try:
                info = probe(ref, decode=decode)
                duration, rate = info.duration, info.sample_rate
            except DataError as exc:
                problem = str(exc)
        durations.append(duration)
        rates.append(rate)
        problems.append(problem)
    return {"duration": durations, "sample_rate": rates, "problem": problems}


def measure(ds: datasets.Dataset, cache_dir: str | Path, num_proc: int = 1, decode: bool = True) -> datasets.Dataset:
    """Add `duration` and `sample_rate` columns (and problems for unreadable files), cached."""
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    cache_file = cache / f"probe-{_files_key(ds, decode)}.arrow"
    # Only the measurements are cached (keyed by the files and known problems): a cached copy of the
    # whole table would bring back stale transcripts, speakers or row numbers after metadata edits.
    probed = ds.select_columns(["audio", "problem"]).map(
        _probe_batch,
        batched=True,
        batch_size=64,
        fn_kwargs={"decode": decode},
        num_proc=num_proc if num_proc > 1 and len(ds) > 256 else None,
        cache_file_name=str(cache_file),
        load_from_cache_file=True,
        desc="measuring audio",
    )
    ds = ds.remove_columns(["problem"])
    for column in ("problem", "duration", "sample_rate"):
        ds = ds.add_column(column, list(probed[column]))
    return ds


def prepare_split(
    ds: datasets.Dataset,
    split: str,
    source: str,
    report: SkipReport,
    *,
    normalize: Callable[[str], str],
    min_duration: float,
    max_duration: float,
    need_text: bool,
    on_bad_rows: str,
    cache_dir: str | Path,
    num_proc: int = 1,
    check_text: Callable[[str], str | None] | None = None,
) -> datasets.Dataset:
    """Measure, normalise and filter one split. Returns the usable rows (column `text` normalised)."""
    ds = measure(ds, cache_dir, num_proc=num_proc)
    keep: list[int] = []
    texts: list[str] = []
    seconds = 0.0
    for i, row in enumerate(ds):
        reason = row["problem"]
        text = normalize(row["text"]) if need_text else row["text"]
        if not reason and need_text and not text:
            reason = "empty transcript" if not row["text"].strip() else f"transcript empty after normalisation ({row['text'][:40]!r})"
        if not reason and row["duration"] < min_duration:
            reason = f"too short ({row['duration']:.2f} s < data.min_duration {min_duration} s)"
        if not reason and row["duration"] > max_duration:
            reason = f"too long ({row['duration']:.1f} s > data.max_duration {max_duration} s)"
        if not reason and need_text and check_text is not None:
            reason = check_text(text) or ""
        if reason:
            audio = row["audio"] if isinstance(row["audio"], str) else str((row["audio"] or {}).get("path"))
            if on_bad_rows == "error":
                raise DataError(f"{source} row {row['row']} ({audio}): {reason}")
            report.skip(split, source, row["row"], audio, reason)
            continue
        keep.append(i)
        texts.append(text)
        seconds += row["duration"]
    out = ds.select(keep).remove_columns(["problem"])
    out = out.remove_columns(["text"]).add_column("text", texts)
    report.add_split(split, source, rows=len(ds), kept=len(out), seconds=seconds)
    if len(out) == 0:
        raise DataError(f"{source}: no usable utterances in the {split} split ({report.summary()}); see the skip report")
    return out

