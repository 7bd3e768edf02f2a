"""Speaker-disjoint splits: no voice may be heard in training and then scored in evaluation.

Splitting a folder by rows leaks speakers across splits, and the WER on the dev split then says
little about new speakers. `split_by_column` assigns whole groups (speakers, sessions, ...) to one
side and writes two manifests that point at the original files (nothing is copied).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.data.sources import METADATA_NAMES, read_table
from pipeline.errors import DataError
from pipeline.io import write_csv


def split_by_column(
    folder: str | Path,
    out_dir: str | Path,
    column: str = "speaker",
    dev_fraction: float = 0.2,
    seed: int = 0,
    dev_groups: list[str] | None = None,
) -> dict[str, Any]:
    """Write `out_dir/train.csv` and `out_dir/dev.csv` (audio paths relative to out_dir)."""
    folder = Path(folder)
    meta = next((folder / n for n in METADATA_NAMES if (folder / n).is_file()), None)
    if meta is None:
        raise DataError(f"{folder}: no metadata.csv or metadata.jsonl to split")
    rows = [r for r in read_table(meta) if "__problem__" not in r]
    if not rows:
        raise DataError(f"{meta}: no rows")
    if column not in rows[0]:
        raise DataError(f"{meta}: no column {column!r} to split by (columns: {', '.join(rows[0])})")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r.get(column) or "")].append(r)
    names = sorted(groups)
    if len(names) < 2:
        raise DataError(f"{meta}: column {column!r} has {len(names)} distinct value(s); a disjoint split needs at least 2")
    if dev_groups:
        unknown = sorted(set(dev_groups) - set(names))
        if unknown:
            raise DataError(f"{meta}: {column} value(s) not found: {', '.join(unknown)}")
        dev = set(dev_groups)
    else:
        rng = random.Random(seed)
        shuffled = names[:]
        rng.shuffle(shuffled)
        target = dev_fraction * len(rows)
        dev, count = set(), 0
        for name in shuffled:
            if count >= target or len(dev) == len(names) - 1:
                break
            dev.add(name)
            count += len(groups[name])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    audio_col = next(c for c in ("file_name", "audio", "path") if c in rows[0])
    fields = list(rows[0].keys())
    result: dict[str, Any] = {"column": column, "dev_groups": sorted(dev)}
    for split, members in (("train", [n for n in names if n not in dev]), ("dev", sorted(dev))):
        table = []
        for name in members:
            for r in groups[name]:
                r = dict(r)
                src = Path(str(r[audio_col]))
                full = src if src.is_absolute() else (folder / src).resolve()
                try:
                    r[audio_col] = str(full.relative_to(out.resolve()))
                except ValueError:
                    r[audio_col] = str(full)
                table.append(r)
        write_csv(out / f"{split}.csv", table, fields)
        result[split] = {"rows": len(table), "groups": len(members)}
    return result
