"""Speaker-disjoint splitting of one folder (pipeline.data.split)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import DataSpec
from pipeline.data.sources import load_spec
from pipeline.data.split import split_by_column
from pipeline.errors import DataError


def _folder(root: Path, speakers: dict[str, int]) -> Path:
    root.mkdir(parents=True)
    rows = []
    for spk, n in speakers.items():
        for i in range(n):
            name = f"{spk}_{i}.wav"
            sf.write(root / name, np.zeros(1600, dtype=np.float32), 16000)
            rows.append({"file_name": name, "text": f"word {i}", "speaker": spk})
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file_name", "text", "speaker"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_split_is_speaker_disjoint_and_loads(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "all", {"a": 5, "b": 5, "c": 5, "d": 5, "e": 5})
    info = split_by_column(folder, tmp_path / "splits", dev_fraction=0.2, seed=1)
    train = load_spec(DataSpec(path=str(tmp_path / "splits" / "train.csv")))
    dev = load_spec(DataSpec(path=str(tmp_path / "splits" / "dev.csv")))
    assert set(train["speaker"]).isdisjoint(dev["speaker"])
    assert len(train) + len(dev) == 25 and len(dev) == 5
    assert set(dev["speaker"]) == set(info["dev_groups"])
    assert all(not p for p in list(train["problem"]) + list(dev["problem"]))  # every path resolves to the original files


def test_split_explicit_dev_and_errors(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "all", {"a": 2, "b": 3})
    info = split_by_column(folder, tmp_path / "s", dev_groups=["b"])
    assert info["dev"] == {"rows": 3, "groups": 1}
    with pytest.raises(DataError, match="not found: z"):
        split_by_column(folder, tmp_path / "s2", dev_groups=["z"])
    with pytest.raises(DataError, match="no column 'accent'"):
        split_by_column(folder, tmp_path / "s3", column="accent")
    one = _folder(tmp_path / "one", {"a": 3})
    with pytest.raises(DataError, match="at least 2"):
        split_by_column(one, tmp_path / "s4")
