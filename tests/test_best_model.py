"""`train.final_model=best` and early stopping: the run ends on the weights of its best evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import load_recipe
from pipeline.errors import RecipeError
from pipeline.training.checkpoint import complete_checkpoints

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "asr" / "conformer_quickstart.yaml"
PATIENCE = 3


def read_log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]


def test_early_stopping_ends_on_the_best_evaluation(tiny_corpus: Path, tiny_recipe_overrides, run_script,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"output_dir={out}",
            f"data.train={tiny_corpus / 'train'}", f"data.eval={tiny_corpus / 'test'}",
            "train.max_steps=40", "train.eval_every=1", "train.save_every=1000", "train.log_every=1",
            "train.batch_seconds=6", "train.keep_last=1", "train.final_model=best", "train.best_metric=cer",
            f"train.early_stopping_patience={PATIENCE}"]
    proc = run_script("train.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "train_results.json").read_text())
    evals = [(r["step"], r["eval_cer"]) for r in read_log(out) if "eval_cer" in r]
    steps = results["steps"]
    assert results["stop_reason"] == f"early_stopping ({PATIENCE} evaluations without improvement)", results
    assert steps < 40 and [s for s, _ in evals] == list(range(1, steps + 1))

    # the best is the first evaluation with the lowest CER, and the run stopped PATIENCE evaluations later
    best_step = min(evals, key=lambda e: e[1])[0]
    assert results["best_step"] == results["model_step"] == best_step == steps - PATIENCE
    assert results["best_eval_cer"] == dict(evals)[best_step]
    assert all(cer >= results["best_eval_cer"] for _, cer in evals[best_step:])

    # keep_last=1 keeps the last checkpoint and spares the best one, whose weights the model directory holds
    assert [p.name for p in complete_checkpoints(out)] == [f"step-{best_step:08d}", f"step-{steps:08d}"]
    final = load_file(out / "model.safetensors")
    best = load_file(out / "checkpoints" / f"step-{best_step:08d}" / "model.safetensors")
    last = load_file(out / "checkpoints" / f"step-{steps:08d}" / "model.safetensors")
    assert final.keys() == best.keys() and all(torch.equal(final[k], best[k]) for k in final)
    assert any(not torch.equal(final[k], last[k]) for k in final), "the last step's weights were kept"
    # the final evaluation (the whole split) scored those weights: the same as their periodic evaluation
    assert results["eval_cer"] == results["best_eval_cer"]
    assert f"weights of step {best_step}, the best evaluation" in (out / "README.md").read_text(encoding="utf-8")
    assert f"final model (step {best_step})" in proc.stdout and f"the model of step {best_step}" in proc.stderr

    # resuming a run that stopped early trains no further and ends on the same model
    again = run_script("train.py", *args, "train.resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing left to train" in again.stderr
    assert json.loads((out / "train_results.json").read_text())["steps"] == steps
    resumed = load_file(out / "model.safetensors")
    assert all(torch.equal(resumed[k], best[k]) for k in resumed)


def test_best_model_needs_an_evaluation_split(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="train.final_model=best needs periodic evaluations: set data.eval"):
        load_recipe(QUICKSTART, [f"output_dir={tmp_path}", "data.eval=null", "train.final_model=best"])
    with pytest.raises(RecipeError, match="train.early_stopping_patience needs periodic evaluations"):
        load_recipe(QUICKSTART, [f"output_dir={tmp_path}", "data.eval=null", "train.early_stopping_patience=2"])
    with pytest.raises(RecipeError, match="without 'eval_'"):
        load_recipe(QUICKSTART, [f"output_dir={tmp_path}", "train.best_metric=eval_cer"])


def test_an_unknown_best_metric_is_named(tiny_corpus: Path, tiny_recipe_overrides, run_script, tmp_path: Path) -> None:
    proc = run_script("train.py", str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"output_dir={tmp_path / 'r'}",
                      f"data.train={tiny_corpus / 'train'}", f"data.eval={tiny_corpus / 'test'}",
                      "train.max_steps=2", "train.eval_every=1", "train.batch_seconds=6",
                      "train.final_model=best", "train.best_metric=accuracy")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "train.best_metric" in last and "'accuracy'" in last and "wer" in last and "Traceback" not in proc.stderr


def test_the_last_step_competes_when_no_periodic_evaluation_reached_it(tiny_corpus: Path, tiny_recipe_overrides,
                                                                        run_script, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_script("train.py", str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"output_dir={out}",
                      f"data.train={tiny_corpus / 'train'}", f"data.eval={tiny_corpus / 'test'}", "train.max_steps=5",
                      "train.eval_every=2", "train.batch_seconds=6", "train.learning_rate=1e-6", "train.warmup_steps=0",
                      "train.final_model=best", "train.best_metric=cer", "train.keep_last=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = [(r["step"], r["eval_cer"]) for r in read_log(out) if "eval_cer" in r]
    assert [s for s, _ in evals] == [2, 4, 5]  # the periodic ones, then the last step
    results = json.loads((out / "train_results.json").read_text())
    best_step = min(evals, key=lambda e: e[1])[0]
    assert results["best_step"] == results["model_step"] == best_step
    assert results["eval_cer"] == dict(evals)[best_step]
