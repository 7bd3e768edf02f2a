"""Atomic, rotating training checkpoints.

A checkpoint is `OUTPUT/checkpoints/step-NNNNNNNN/`: accelerate's state (model, optimizer,
scheduler, scaler, RNG states of every process) plus `trainer_state.json` (step, epoch, sampler
position, history). It is written under a temporary name and renamed into place only once every
process has finished writing, so a crash mid-write leaves the previous checkpoint as the newest
complete one; `trainer_state.json` is written last and marks a checkpoint as complete.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME
from accelerate.utils import load as load_weights_only

from pipeline.errors import CheckpointError
from pipeline.io import write_json

logger = logging.getLogger(__name__)

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


_RANDOM_STATES = ("random_state", "numpy_random_seed", "torch_manual_seed")


def load_checkpoint(accelerator: Accelerator, path: Path, exact: bool = True) -> None:
    """Restore model, optimizer, scheduler and this process's random states from `path` (its trainer state, the
    loop's own, is `read_trainer_state`'s).

    Anything that cannot be restored is a `CheckpointError` naming the file. accelerate itself would skip random
    states it cannot read (logging it at INFO level), and the resumed run would then silently draw other dropout
    masks and batches than the uninterrupted one. Pickled files are read with torch's weights-only unpickler
    (accelerate's `load`), which refuses anything but tensors and plain containers. With `exact` false, random
    states this process cannot restore (it did not write the checkpoint: more processes now) are a warning.
    """
    hint = _hint(path)
    randoms = path / f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl"
    try:
        loaded = load_weights_only(randoms)
        missing = [k for k in _RANDOM_STATES if k not in loaded]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
    except Exception as exc:  # a missing, truncated or foreign file: whatever torch.load raises
        problem = f"{randoms}: cannot restore the random states ({_first_line(exc)})"
        if exact:
            raise CheckpointError(f"{problem}; {hint}") from None
        logger.warning("%s: train.resume_exact=false, this process goes on with fresh ones", problem)
    try:
        accelerator.load_state(str(path))
    except Exception as exc:  # safetensors, torch.load and load_state_dict each raise their own kinds
        culprit, why = _unreadable_file(path) or (path, exc)
        raise CheckpointError(f"{culprit}: cannot load it ({type(why).__name__}: {_first_line(why)}); {hint}") from None


def _unreadable_file(path: Path) -> tuple[Path, BaseException] | None:
    """After a failed `load_state`, the first of the checkpoint's files that cannot be read at all (a size mismatch
    with the recipe's model reads fine: then the error names the checkpoint). Only runs on failure: a healthy
    resume reads every file once."""
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):  # checks the header and that the data covers the file
                pass
        except Exception as exc:
            return file, exc
    for file in sorted(path.glob("*.bin")):
        try:
            load_weights_only(file, map_location="cpu")
        except Exception as exc:
            return file, exc
    return None


def read_trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's `trainer_state.json` (step, epoch, sampler position, history)."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / STATE_FILE}: cannot read it ({_first_line(exc)}); {_hint(path)}") from None
    return state


def _hint(path: Path) -> str:
    return f"delete {path} to resume from the checkpoint before it, or start over with train.resume=false"


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, pickle.UnpicklingError):  # torch's long advice to load it unsafely is not ours to give
        text = str(exc)
        called = re.search(r"GLOBAL ([\w.]+)", text)  # torch words it in several ways, all naming the GLOBAL
        if called:
            return (f"it holds objects other than tensors (it would call {called.group(1)}), which the weights-only "
                    "unpickler refuses to build")
        after = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        detail = next((line.strip() for line in after.splitlines() if line.strip()), "")
        return "not a pickle the weights-only unpickler can read" + (f" ({detail})" if detail else "")
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    if len(lines) > 1 and lines[0].endswith(":"):  # load_state_dict: "Error(s) in loading ...:" then the first error
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else type(exc).__name__
