"""Exact resume: a run killed after a checkpoint and resumed ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import run_python
from safetensors.torch import load_file

from pipeline.training.checkpoint import STATE_FILE, complete_checkpoints, latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "asr" / "conformer_quickstart.yaml"

# Runs scripts/train.py unchanged, except that the process SIGKILLs itself right after the
# checkpoint of step KILL_AT is complete: a crash at a known point (polling from outside would
# race a tiny model that trains dozens of steps per second).
KILLER = """
import os, runpy, signal, sys
import pipeline.training.loop as loop
KILL_AT = int(sys.argv[1])
_save = loop.save_checkpoint
def save_then_die(acc, out, step, state, keep_last, **kw):
    path = _save(acc, out, step, state, keep_last, **kw)
    if step == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return path
loop.save_checkpoint = save_then_die
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def read_log(out: Path) -> list[dict]:
    lines = (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def loss_steps(log: list[dict]) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["lr"]) for r in log if "loss" in r]


# AdamW with noise and rooms, the interrupted run collating in two worker processes: what a batch draws
# depends on which batch it is, not on the process that collates it. Muon on the Conformer's convolution
# kernels too (flattened): its momentum buffers must survive the checkpoint; the interrupted run recomputes
# its layers' activations in the backward pass (dropout on): gradient checkpointing changes no number.
@pytest.mark.parametrize(("setting", "interrupted"), [
    ("adamw data.augment.noise=synthetic data.augment.reverb=synthetic", ["train.num_workers=2"]),
    ("muon train.muon_convolutions=true model.config.encoder_config.num_hidden_layers=2",
     ["train.gradient_checkpointing=true"]),
])
def test_killed_and_resumed_run_equals_uninterrupted_run(setting: str, interrupted: list[str], tiny_corpus: Path,
                                                         tiny_recipe_overrides, run_script, tmp_path: Path) -> None:
    name, *more = setting.split()
    common = [
        str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"train.optimizer={name}", *more,
        f"data.train={tiny_corpus / 'train'}", f"data.eval={tiny_corpus / 'test'}",
        "train.max_steps=8", "train.save_every=2", "train.eval_every=1000", "train.log_every=1",
        "train.batch_seconds=6", "train.keep_last=2",
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    run_a = run_script("train.py", *common, f"output_dir={a}")
    assert run_a.returncode == 0, run_a.stderr[-3000:]

    b1 = run_python(["-c", KILLER, "4", REPO / "scripts" / "train.py", *common, *interrupted, f"output_dir={b}"])
    assert b1.returncode == -signal.SIGKILL, b1.stderr[-3000:]
    assert not (b / "model.safetensors").exists()  # it never finished
    assert latest_checkpoint(b) == b / "checkpoints" / "step-00000004"
    assert [p.name for p in complete_checkpoints(b)] == ["step-00000002", "step-00000004"]
    at_step4 = load_file(b / "checkpoints" / "step-00000004" / "model.safetensors")

    # Debris of a later crash: a half-written checkpoint under its temporary name, and a final-named
    # folder without trainer_state.json (written last): resume must ignore both and use step 4.
    tmp_ckpt = b / "checkpoints" / ".tmp-step-00000006"
    shutil.copytree(b / "checkpoints" / "step-00000004", tmp_ckpt)
    (tmp_ckpt / "model.safetensors").write_bytes(b"\0" * 100)
    partial = b / "checkpoints" / "step-00000006"
    shutil.copytree(b / "checkpoints" / "step-00000004", partial)
    (partial / STATE_FILE).unlink()
    for f in partial.glob("*.safetensors"):
        f.write_bytes(b"garbage")
    assert latest_checkpoint(b) == b / "checkpoints" / "step-00000004"

    b2 = run_script("train.py", *common, *interrupted, f"output_dir={b}", "train.resume=true")
    assert b2.returncode == 0, b2.stderr[-3000:]
    assert "resumed from" in b2.stderr and "step-00000004" in b2.stderr
    if "train.gradient_checkpointing=true" in interrupted:
        assert "train.gradient_checkpointing: 2 layers recompute" in b1.stderr + b2.stderr

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and wa
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"
    # the resumed run really trained on from step 4, and its last checkpoint holds the final weights
    assert any(not torch.equal(at_step4[k], wb[k]) for k in wb)
    step8 = load_file(b / "checkpoints" / "step-00000008" / "model.safetensors")
    assert step8.keys() == wb.keys() and all(torch.equal(step8[k], wb[k]) for k in wb)

    # the logs agree step by step (B's log is B1's steps 1-4 followed by B2's steps 5-8)
    assert loss_steps(read_log(a)) == loss_steps(read_log(b))
    assert [r[0] for r in loss_steps(read_log(b))] == list(range(1, 9))
    ra, rb = (json.loads((d / "train_results.json").read_text()) for d in (a, b))
    assert ra["steps"] == rb["steps"] == 8 and ra["eval_wer"] == rb["eval_wer"]
    # the debris is gone: a later save removes stale temporary folders and replaces incomplete ones
    assert not list((b / "checkpoints").glob(".tmp-step-*"))
    assert [p.name for p in complete_checkpoints(b)] == ["step-00000006", "step-00000008"]


def test_latest_checkpoint_ignores_incomplete_and_foreign_dirs(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(tmp_path) is None  # no folder at all
    root.mkdir()
    assert latest_checkpoint(tmp_path) is None
    for name, complete in (("step-00000002", True), ("step-00000010", True), ("step-00000030", False),
                           (".tmp-step-00000040", True), ("step-50", True), ("other", True)):
        (root / name).mkdir()
        if complete:
            (root / name / STATE_FILE).write_text("{}")
    (root / "step-00000060").write_text("a file, not a folder")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000002", "step-00000010"]  # numeric order
    assert latest_checkpoint(tmp_path) == root / "step-00000010"


class _RunsCode:
    """Pickles to a call of os.mkdir: a stand-in for a checkpoint file crafted to run code when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_that_cannot_be_restored_is_a_one_line_error(tiny_corpus: Path, tiny_recipe_overrides,
                                                                    run_script, tmp_path: Path) -> None:
    """A resume restores everything or stops with a line naming what it could not read. Before, accelerate skipped
    random states it could not load (an INFO log line) and the resumed run trained on, no longer exactly."""
    common = [str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"data.train={tiny_corpus / 'train'}",
              "data.eval=null", "train.save_every=2", "train.batch_seconds=6"]
    first = tmp_path / "first"
    proc = run_script("train.py", *common, f"output_dir={first}", "train.max_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    marker = tmp_path / "code-ran"

    def code_pickle(path: Path) -> None:
        torch.save(_RunsCode(marker), path)  # the format accelerate writes (a zip holding a pickle)

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    cases = {  # file -> (how it is broken, what the error line names)
        "random_states_0.pkl": (code_pickle, "random_states_0.pkl: cannot restore the random states"),
        "optimizer.bin": (truncate, "step-00000002/optimizer.bin: cannot load it"),
        "model.safetensors": (lambda p: p.write_bytes(b"\xff" * 64),
                              "step-00000002/model.safetensors: cannot load it (Safetensor"),
        "trainer_state.json": (lambda p: p.write_text("{"), "trainer_state.json: cannot read it"),
    }
    for name, (breaks, named) in cases.items():
        out = tmp_path / name
        shutil.copytree(first, out)
        ckpt = out / "checkpoints" / "step-00000002"
        breaks(ckpt / name)
        proc = run_script("train.py", *common, f"output_dir={out}", "train.max_steps=4", "train.resume=true")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (name, proc.stderr[-3000:])
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and named in last and f"delete {ckpt} to resume" in last, (name, last)
        assert not marker.exists(), "loading the checkpoint ran the code pickled into it"
        if breaks is code_pickle:  # the line says what the pickle would have called
            assert "holds objects other than tensors (it would call posix.mkdir)" in last, last
        assert json.loads((out / "train_results.json").read_text())["steps"] == 2  # nothing trained on
    # train.resume_exact=false goes on without random states it cannot restore (and still never runs the pickle)
    out = tmp_path / "random_states_0.pkl"
    proc = run_script("train.py", *common, f"output_dir={out}", "train.max_steps=4", "train.resume=true",
                      "train.resume_exact=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cannot restore the random states" in proc.stderr and "goes on with fresh ones" in proc.stderr
    assert json.loads((out / "train_results.json").read_text())["steps"] == 4
    assert not marker.exists()
    # every file reads, but the recipe now builds another model: the line says which weight does not fit
    out = tmp_path / "resized"
    shutil.copytree(first, out)
    proc = run_script("train.py", *common, "model.config.encoder_config.intermediate_size=48", f"output_dir={out}",
                      "train.max_steps=4", "train.resume=true")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "step-00000002: cannot load it (RuntimeError: Error(s) in loading state_dict" in last, last
    assert "size mismatch for" in last and "torch.Size([48" in last, last  # the recipe's 48 against the saved 64
    # every file reads and the model fits, but batches of 5 s instead of 6: batch 2 of the epoch is another batch
    out = tmp_path / "rebatched"
    shutil.copytree(first, out)
    proc = run_script("train.py", *common, "train.batch_seconds=5", f"output_dir={out}", "train.max_steps=4",
                      "train.resume=true")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert last.startswith("error: train.resume: ") and "(train.batch_seconds 6.0 -> 5.0)" in last, last
    assert json.loads((out / "train_results.json").read_text())["steps"] == 2
    # asked to, it goes on from there, and says it is not the uninterrupted run
    proc = run_script("train.py", *common, "train.batch_seconds=5", f"output_dir={out}", "train.max_steps=4",
                      "train.resume=true", "train.resume_exact=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train.resume_exact=false: " in proc.stderr and "(train.batch_seconds 6.0 -> 5.0)" in proc.stderr
    assert json.loads((out / "train_results.json").read_text())["steps"] == 4
    logged = [r["step"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]
    assert logged == [2, 4], logged  # the last steps of the first run and of this one (log_every 10)
    # the pickle really runs code when unpickled without the weights-only guard: the check above means something
    code_pickle(tmp_path / "probe.pkl")
    torch.load(tmp_path / "probe.pkl", weights_only=False)
    assert marker.is_dir()
