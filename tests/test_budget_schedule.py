"""A wall-clock budget (`train.max_minutes`) bends the LR schedule so a capped run still decays fully."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import get_scheduler

from pipeline.training.loop import follow_budget

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "asr" / "quickstart.yaml"


def _cosine(total: int, warmup: int = 10) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    return opt, get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=total)


def test_follow_budget_jumps_ahead_only_when_time_leads() -> None:
    opt, sched = _cosine(100)
    reference = [sched.lr_lambdas[0](s) for s in range(101)]
    for _ in range(20):  # 20 steps done
        opt.step()
        sched.step()
    follow_budget(sched, used=0.1, total_steps=100, warmup_steps=10)  # time behind the steps: nothing moves
    assert sched.last_epoch == 20 and sched.get_last_lr()[0] == reference[20]
    follow_budget(sched, used=0.5, total_steps=100, warmup_steps=10)  # ahead: decay goes to 10 + ceil(0.5 * 90)
    assert sched.last_epoch == 55 and abs(sched.get_last_lr()[0] - reference[55]) < 1e-12
    follow_budget(sched, used=1.7, total_steps=100, warmup_steps=10)  # past the budget: the end, not beyond
    assert sched.last_epoch == 100 and sched.get_last_lr()[0] < 1e-9
    opt, warm = _cosine(100, warmup=30)  # warm-up counts steps, however much time it takes
    for _ in range(5):
        opt.step()
        warm.step()
    follow_budget(warm, used=0.9, total_steps=100, warmup_steps=30)
    assert warm.last_epoch == 5
    follow_budget(warm, used=0.2, total_steps=100, warmup_steps=30, warmup_follows=True)  # warm-up by the clock too
    assert warm.last_epoch == 20 and abs(warm.get_last_lr()[0] - 20 / 30) < 1e-12
    follow_budget(warm, used=0.65, total_steps=100, warmup_steps=30, warmup_follows=True)  # half of the decay
    assert warm.last_epoch == 65 and abs(warm.get_last_lr()[0] - 0.5) < 1e-12
    follow_budget(warm, used=0.4, total_steps=100, warmup_steps=30, warmup_follows=True)  # never backwards
    assert warm.last_epoch == 65
    state = sched.state_dict()  # the position a checkpoint stores
    _, restored = _cosine(100)
    restored.load_state_dict(state)
    assert restored.last_epoch == 100


def test_capped_run_ends_its_schedule_by_the_deadline(tiny_corpus: Path, tiny_recipe_overrides, run_script,
                                                       tmp_path: Path) -> None:
    """A run planned for far more steps than 0.05 min allows stops on time with a decayed learning rate."""
    out = tmp_path / "capped"
    common = [str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"data.train={tiny_corpus / 'train'}",
              "data.eval=null", "train.max_steps=100000", "train.lr_schedule=cosine", "train.learning_rate=1e-3",
              "train.warmup_ratio=0.0", "train.log_every=1", "train.save_every=100000", "train.batch_seconds=6"]
    proc = run_script("train.py", *common, f"output_dir={out}", "train.max_minutes=0.05")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "train_results.json").read_text())
    assert results["stop_reason"] == "max_minutes (0.05)"
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    lrs = [r["lr"] for r in log if "lr" in r]
    assert len(lrs) == results["steps"] >= 3
    assert lrs[-1] < 0.05 * 1e-3  # decayed by the deadline, though only a sliver of the planned steps ran
    assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False))  # cosine without warm-up only goes down

    # The cap is the whole run's: resuming a run that spent it trains no further step.
    proc = run_script("train.py", *common, f"output_dir={out}", "train.max_minutes=0.05", "train.resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing left to train" in proc.stderr
    again = json.loads((out / "train_results.json").read_text())
    assert again["steps"] == results["steps"] and again["stop_reason"] == "max_minutes (0.05)"

    # Off: the same cap cuts the schedule near its start, at almost the peak learning rate.
    off = tmp_path / "off"
    proc = run_script("train.py", *common, f"output_dir={off}", "train.max_minutes=0.05",
                      "train.schedule_follows_budget=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(x) for x in (off / "train_log.jsonl").read_text().splitlines() if x.strip()]
    assert [r["lr"] for r in log if "lr" in r][-1] > 0.9 * 1e-3


def test_warmup_follows_budget_warms_up_for_its_share_of_the_minutes(tiny_corpus: Path, tiny_recipe_overrides,
                                                                      run_script, tmp_path: Path) -> None:
    """Half of 100000 planned steps is a warm-up no capped run finishes; half of the minutes is one it does."""
    out = tmp_path / "warm"
    proc = run_script("train.py", str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"data.train={tiny_corpus / 'train'}",
                      "data.eval=null", "train.max_steps=100000", "train.lr_schedule=cosine", "train.learning_rate=1e-3",
                      "train.warmup_ratio=0.5", "train.log_every=1", "train.save_every=100000", "train.batch_seconds=6",
                      f"output_dir={out}", "train.max_minutes=0.05", "train.warmup_follows_budget=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    lrs = [r["lr"] for r in log if "lr" in r]
    peak = lrs.index(max(lrs))
    assert len(lrs) >= 6 and 0 < peak < len(lrs) - 1
    assert max(lrs) > 0.5 * 1e-3  # counted in steps, the warm-up would have reached 1e-3 * steps / 50000
    assert all(b >= a for a, b in zip(lrs[:peak], lrs[1:peak + 1], strict=False))  # up, then down
    assert all(b <= a for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))
    assert lrs[-1] < 0.05 * 1e-3
