"""Atomic, rotating training checkpoints.

A checkpoint is `OUTPUT/checkpoints/step-NNNNNNNN/`: accelerate's state (model, optimizer,
scheduler, scaler, RNG states of every process) plus `trainer_state.json` (step, epoch, sampler
position, history). It is written under a temporary name and renamed into place only once every
process has finished writing, so a crash mid-write leaves the previous checkpoint as the newest
complete one; `trainer_state.json` is written last and marks a checkpoint as complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from pipeline.io import write_json

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, step: int, state: dict[str, Any], keep_last: int,
                    spare: int | None = None) -> Path:
    """Write the checkpoint of `step`, then delete all but the newest `keep_last` (0: keep all), sparing the
    checkpoint of step `spare` (the best model's, when the run ends on it)."""
    root = checkpoints_dir(output_dir)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step-*"):  # left by a crash during an earlier write
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in complete_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            if spare is None or old.name != checkpoint_name(spare):
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
