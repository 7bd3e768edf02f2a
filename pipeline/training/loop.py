"""The one training loop every task uses (accelerate: one CPU/GPU, DDP, FSDP, DeepSpeed).

Losses are *summed* by the task and divided here by the number of units (target tokens, frames)
in the whole optimizer step across every process and accumulation micro-batch. Gradients are
therefore the same whether a step's utterances run on one process or on many, in one micro-batch
or in several. Steps whose gradient is not finite are skipped and counted, never applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    ProjectConfiguration,
    broadcast_object_list,
    set_seed,
)
from transformers import get_scheduler

from pipeline.config import Recipe, dump_recipe
from pipeline.data.batching import DurationBatchSampler
from pipeline.errors import RecipeError
from pipeline.io import write_json, write_text
from pipeline.machine import machine_info
from pipeline.models.fast_forward import speed_up
from pipeline.tasks.base import Task
from pipeline.training.activation_checkpointing import enable_gradient_checkpointing
from pipeline.training.allocator import keep_freed_memory
from pipeline.training.checkpoint import (
    checkpoint_name,
    checkpoints_dir,
    latest_checkpoint,
    load_checkpoint,
    read_trainer_state,
    save_checkpoint,
)
from pipeline.training.loader import batch_loader
from pipeline.training.optimizers import build_optimizer, choose_optimizer
from pipeline.training.plots import plot_history

logger = logging.getLogger(__name__)


def make_accelerator(recipe: Recipe) -> Accelerator:
    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    mp = recipe.train.mixed_precision
    if mp == "fp16" and cpu:
        raise RecipeError("train.mixed_precision=fp16 needs a GPU; use bf16 (works on CPU) or no")
    acc = Accelerator(
        cpu=cpu,
        mixed_precision=mp,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=recipe.output_dir, logging_dir=str(Path(recipe.output_dir) / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        step_scheduler_with_optimizer=False,
    )
    if recipe.train.optimizer == "muon" and acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise RecipeError(f"train.optimizer=muon needs whole weight matrices on every process, not shards "
                          f"({acc.distributed_type.value}): use adamw, or one process / DDP")
    return acc


class Trainer:
    def __init__(self, recipe: Recipe, task: Task, accelerator: Accelerator) -> None:
        self.recipe = recipe
        self.task = task
        self.acc = accelerator
        self.out = Path(recipe.output_dir)
        self.history: list[dict[str, Any]] = []
        self.rank_by = recipe.train.best_metric or task.main_metric  # ranks evaluations, lower is better

    # ---------------------------------------------------------------------------------------
    def _sampler(self) -> DurationBatchSampler:
        t = self.recipe.train
        return DurationBatchSampler(
            self.task.train_durations(), batch_seconds=t.batch_seconds, max_batch_size=t.max_batch_size,
            max_padding=t.max_padding, num_replicas=self.acc.num_processes, rank=self.acc.process_index,
            seed=self.recipe.seed, sorted_epochs=t.sortagrad_epochs,
        )

    def _batching(self, sampler: DurationBatchSampler) -> dict[str, Any]:
        """What decides which utterances make up the n-th batch of an epoch. A checkpoint records it: the sampler
        position it saves (epoch, batch) means the same batches only under the same settings and data."""
        t = self.recipe.train
        return {"processes": self.acc.num_processes, "train.batch_seconds": t.batch_seconds,
                "train.max_batch_size": t.max_batch_size, "train.max_padding": t.max_padding,
                "train.sortagrad_epochs": t.sortagrad_epochs, "train.gradient_accumulation": t.gradient_accumulation,
                "seed": self.recipe.seed, "training utterances": len(sampler.durations),
                "training seconds": round(float(sum(sampler.durations)), 3)}

    def _check_batching(self, ckpt: Path, resumed: dict[str, Any], batching: dict[str, Any]) -> bool:
        """Whether `ckpt` (trainer state `resumed`) was written under the same batching (checkpoints older than the
        record count as the same). Otherwise the run would not continue where it stopped: an error, or with
        `train.resume_exact=false` a warning."""
        saved = resumed.get("batching")
        if not isinstance(saved, dict):
            return True
        changed = [f"{k} {saved[k]} -> {v}" for k, v in batching.items() if k in saved and saved[k] != v]
        if not changed:
            return True
        problem = f"{ckpt} was written under other batching ({'; '.join(changed)})"
        if self.recipe.train.resume_exact:
            raise RecipeError(f"train.resume: {problem}: the run would not go on as it would have (other batches "
                              f"from its place in the epoch, or other random streams). Resume with the checkpoint's "
                              f"settings, go on anyway with train.resume_exact=false, or start over with "
                              f"train.resume=false")
        logger.warning("train.resume_exact=false: %s; the epoch goes on from the same share of its batches", problem)
        return False

    def _optimizer_name(self, resumed: dict[str, Any] | None) -> str:
        """`train.optimizer` for this machine; with auto, a run resuming a checkpoint (trainer state `resumed`) keeps
        the one it was trained with (its optimizer state fits no other), wherever it resumes."""
        t = self.recipe.train
        sharded = self.acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        name = choose_optimizer(t.optimizer, self.acc.device, sharded)
        saved = resumed.get("optimizer") if resumed is not None and t.optimizer == "auto" else None
        if saved in ("adamw", "muon") and saved != name:
            logger.info("train.optimizer=auto: %s, as in the checkpoint this run resumes (this machine would pick %s)",
                        saved, name)
            name = saved
        elif t.optimizer == "auto":
            logger.info("train.optimizer=auto: %s on this machine (%s)", name, "Muon's iteration is cheap here"
                        if name == "muon" else "no fast bfloat16 products for Muon's iteration" if not sharded
                        else "sharded parameters")
        return name

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.acc.is_main_process:
            with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.acc.log({k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}, step=record["step"])

    # ---------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        recipe, acc, task = self.recipe, self.acc, self.task
        t = recipe.train
        started = time.monotonic()
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "recipe.yaml", dump_recipe(recipe))
        acc.wait_for_everyone()
        set_seed(recipe.seed)

        if t.gradient_checkpointing:
            n = enable_gradient_checkpointing(task.model)
            logger.info("train.gradient_checkpointing: %d layer%s recompute their activations in the backward pass",
                        n, "" if n == 1 else "s")
        # Measured on CPUs only (oneDNN kernels): GPU runs keep transformers' forwards until measured there.
        model = speed_up(task.model) if t.fast_forward and acc.device.type == "cpu" else task.model
        ckpt = latest_checkpoint(self.out) if t.resume else None  # the one this run resumes from
        resumed = read_trainer_state(ckpt) if ckpt is not None else None  # its step, position, history, ...
        optimizer_name = self._optimizer_name(resumed)
        optimizer = build_optimizer(model, dataclasses.replace(t, optimizer=optimizer_name))
        sampler = self._sampler()
        # Each epoch packs its own batches, so epochs may differ by a batch or two: count them all.
        if t.max_steps is not None:
            total_steps = t.max_steps
        else:
            total_steps = sum(math.ceil(len(sampler.global_batches(e)) / t.gradient_accumulation) for e in range(t.epochs))
        warmup = t.warmup_steps if t.warmup_steps is not None else int(t.warmup_ratio * total_steps)
        scheduler = get_scheduler(
            {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[t.lr_schedule],
            optimizer, num_warmup_steps=warmup, num_training_steps=max(total_steps, 1),
        )
        model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)

        batching = self._batching(sampler)
        state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "skipped_nonfinite": 0, "audio_seconds": 0.0,
                 "train_seconds": 0.0, "history": [], "optimizer": optimizer_name, "batching": batching}
        state.update(NO_BEST)
        if t.resume:
            if ckpt is None or resumed is None:
                logger.warning("train.resume=true but %s holds no complete checkpoint: starting from scratch", self.out / "checkpoints")
            else:
                same_batches = self._check_batching(ckpt, resumed, batching)
                load_checkpoint(acc, ckpt, exact=t.resume_exact)
                state = {**NO_BEST, **resumed, "optimizer": optimizer_name, "batching": batching}
                if not same_batches and state.get("epoch_batches"):  # the same share of the epoch's batches
                    now = len(sampler.global_batches(state["epoch"]))
                    state["batch_in_epoch"] = round(state["batch_in_epoch"] * now / state["epoch_batches"])
                self.history = list(state.get("history", []))
                if acc.is_main_process:  # drop what the interrupted run logged after this checkpoint
                    write_text(self.out / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
                logger.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, state["step"], state["epoch"], state["batch_in_epoch"])
        elif acc.is_main_process and (self.out / "train_log.jsonl").exists():
            (self.out / "train_log.jsonl").unlink()
        sampler.set_epoch(state["epoch"], state["batch_in_epoch"])
        if acc.is_main_process:
            acc.init_trackers("train", config={"task": recipe.task, "lr": t.learning_rate, "batch_seconds": t.batch_seconds})

        loader = batch_loader(task, sampler, recipe.seed, acc.process_index, t.num_workers)
        # the filler batch (masking draws random numbers) must not consume the global RNG either
        with torch.random.fork_rng(devices=[]):
            filler = task.collate([task.train_example(min(range(len(sampler.durations)), key=sampler.durations.__getitem__))])

        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=state["step"], desc="training", unit="step", disable=not acc.is_local_main_process,
                   dynamic_ncols=True)
        step = state["step"]
        stop: str | None = None  # why the run stops before its steps or epochs are done
        window: dict[str, float] = {"loss": 0.0, "units": 0.0, "audio": 0.0, "time": 0.0}
        last_saved = step
        last_eval_metrics: dict[str, Any] = {}
        last_eval_step = -1

        earlier_seconds = float(state.get("train_seconds", 0.0))  # spent by the runs this one resumes
        budget = 60 * t.max_minutes if t.max_minutes else None  # the whole run's, resumed ones included

        def budget_used() -> float:
            """Share of the time budget spent, the same on every process (the largest of their clocks)."""
            used = (earlier_seconds + time.monotonic() - started) / budget
            if acc.num_processes > 1:
                used = acc.reduce(torch.tensor(used, device=acc.device), reduction="max").item()
            return used

        def checkpoint() -> None:
            nonlocal last_saved
            state.update(step=step, epoch=sampler.epoch, batch_in_epoch=sampler.start, epoch_batches=len(sampler),
                         history=self.history,
                         train_seconds=earlier_seconds + time.monotonic() - started)
            save_checkpoint(acc, self.out, step, state, t.keep_last, spare=state["best_step"] if keep_best else None)
            last_saved = step

        def run_eval(limit: int | None = recipe.eval.max_utterances, label: str | None = None) -> dict[str, Any]:
            """Periodic evaluations score `eval.max_utterances` of the split; the final one (limit None) all of it.
            A labelled evaluation (of restored weights) is printed but not logged as the current step's."""
            metrics = task.evaluate(acc, acc.unwrap_model(model), limit=limit)
            if acc.is_main_process and metrics:
                if label is None:
                    self._log({"step": step, **{f"eval_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}})
                bar.write(f"{label or f'step {step}'}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                                                    if isinstance(v, float)))
            return metrics

        keep_best = t.final_model == "best"
        on_step_start = getattr(task, "on_step_start", None)
        model.train()
        # Spent by the runs this one resumes (not by this run's own start-up: a new run always takes a step)
        if budget is not None and earlier_seconds >= budget:
            stop = f"max_minutes ({t.max_minutes})"
            logger.warning("train.max_minutes=%s was spent before this resumed run: nothing left to train (raise it "
                           "to train on)", t.max_minutes)
        patience = t.early_stopping_patience
        if patience and state["evals_since_best"] >= patience:
            stop = f"early_stopping ({patience} evaluations without improvement)"
            logger.warning("the run this one resumes stopped early (%d evaluations without improvement): nothing left "
                           "to train (raise train.early_stopping_patience to train on)", state["evals_since_best"])
        while stop is None and step < total_steps and (t.max_steps is not None or sampler.epoch < t.epochs):
            iterator = iter(loader)
            exhausted = False
            while step < total_steps and not exhausted:
                group = []
                for _ in range(t.gradient_accumulation):
                    try:
                        group.append(next(iterator))
                    except StopIteration:
                        exhausted = True
                        break
                if not group:
                    break
                t0 = time.monotonic()
                if on_step_start is not None:  # optional task hook, e.g. a schedule that follows the step
                    on_step_start(acc.unwrap_model(model), step)
                loss_sum, units, audio = self._step(model, optimizer, scheduler, group, filler, state)
                sampler.start += len(group)
                step += 1
                window["loss"] += loss_sum
                window["units"] += units
                window["audio"] += audio
                window["time"] += time.monotonic() - t0
                state["audio_seconds"] += audio
                bar.update(1)
                if step % t.log_every == 0 or step == total_steps:
                    loss = window["loss"] / max(window["units"], 1.0)
                    rec = {"step": step, "loss": loss, "lr": scheduler.get_last_lr()[0], "epoch": sampler.epoch,
                           "audio_seconds_per_second": window["audio"] / max(window["time"], 1e-9)}
                    rec.update(self._task_metrics())
                    self._log(rec)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{rec['lr']:.2e}")
                    window = dict.fromkeys(window, 0.0)
                epoch_end = exhausted or sampler.start >= len(sampler)
                if (t.eval_every and step % t.eval_every == 0) or (not t.eval_every and epoch_end):
                    last_eval_metrics, last_eval_step = run_eval(), step
                    if self._track_best(state, last_eval_metrics, step) and keep_best:
                        checkpoint()  # weights the run may end on: the rotation spares them until beaten
                    if patience and state["evals_since_best"] >= patience:  # the same on every process
                        stop = f"early_stopping ({patience} evaluations without improvement)"
                saving = (t.save_every and step % t.save_every == 0) or (not t.save_every and epoch_end)
                if saving and last_saved != step:
                    checkpoint()
                used = budget_used() if budget is not None else 0.0  # one clock for every process
                if budget is not None and t.schedule_follows_budget:
                    follow_budget(scheduler, used, total_steps, warmup,  # the LR of the next step
                                  warmup_follows=t.warmup_follows_budget)
                if used >= 1.0 and stop is None:  # every process stops at the same step
                    stop = f"max_minutes ({t.max_minutes})"
                if stop is not None:
                    break
            if stop is not None:
                break
            if sampler.start >= len(sampler):
                sampler.set_epoch(sampler.epoch + 1, 0)
        bar.close()
        # The last step competes too: with final_model=best its weights must not be dropped unseen, and the best
        # record should not stop at the last periodic evaluation (a run cut by max_minutes between two of them)
        # (the same answer on every process: only process 0 logs evaluations, but a resumed run's history is its)
        evaluated = last_eval_step == step or any(r.get("step") == step and any(k.startswith("eval_") for k in r)
                                                  for r in self.history)
        if step > 0 and not evaluated and (keep_best or state["best_step"] is not None):
            last_eval_metrics, last_eval_step = run_eval(), step
            self._track_best(state, last_eval_metrics, step)
        state["train_seconds"] = earlier_seconds + time.monotonic() - started
        if step != last_saved or stop is not None:
            checkpoint()

        best_step = state["best_step"]
        whole = recipe.eval.max_utterances is None  # the last periodic evaluation already scored the whole split
        if keep_best and best_step is not None and best_step != step:
            load_checkpoint(acc, checkpoints_dir(self.out) / checkpoint_name(best_step))  # training is over
            logger.info("train.final_model=best: the model of step %d (eval %s %.4f; the last evaluation, step %d, "
                        "gave %s)", best_step, self.rank_by, state["best_metric"], last_eval_step,
                        last_eval_metrics.get(self.rank_by, "-"))
            final = run_eval(limit=None, label=f"final model (step {best_step})")
        else:
            final = last_eval_metrics if last_eval_step == step and whole else run_eval(limit=None)
        best = {"best_step": best_step, f"best_eval_{self.rank_by}": state["best_metric"]} if best_step is not None else {}
        summary = {"steps": step, "epochs_completed": sampler.epoch,
                   "stop_reason": stop or ("max_steps" if t.max_steps is not None else "epochs"),
                   "final_model": t.final_model, "model_step": best_step if keep_best and best_step is not None else step,
                   **best,
                   "skipped_nonfinite_steps": state["skipped_nonfinite"],
                   "train_minutes": round(state["train_seconds"] / 60, 2),
                   "audio_hours_seen": round(state["audio_seconds"] / 3600, 3), "optimizer": optimizer_name,
                   **{f"eval_{k}": v for k, v in final.items()},
                   "machine": machine_info(acc.device, acc.num_processes)}
        if acc.is_main_process:
            task.save(acc.unwrap_model(model), self.out, summary)
            write_json(self.out / "train_results.json", summary)
            plot_history(self.history, self.out / "training_curves.png", metric=task.main_metric,
                         model_step=summary["model_step"] if summary["model_step"] != step else None)
        acc.wait_for_everyone()  # before end_training(), which destroys the process group
        acc.end_training()
        return summary

    def _task_metrics(self) -> dict[str, float]:
        """The task's own training metrics for the log window (optional `step_metrics` hook), averaged over processes."""
        step_metrics = getattr(self.task, "step_metrics", None)
        metrics = step_metrics() if step_metrics is not None else {}
        if metrics and self.acc.num_processes > 1:
            keys = sorted(metrics)
            values = self.acc.reduce(torch.tensor([float(metrics[k]) for k in keys], device=self.acc.device), reduction="mean")
            metrics = dict(zip(keys, values.tolist(), strict=True))
        return {k: float(v) for k, v in metrics.items()}

    def _track_best(self, state: dict[str, Any], metrics: dict[str, Any], step: int) -> bool:
        """Record an evaluation's main metric (lower is better) in `state`; True when it is the best so far.

        `evals_since_best` counts the evaluations that did not beat the best by `train.early_stopping_min_delta`;
        a non-finite metric (a diverged model) never improves.
        """
        t = self.recipe.train
        key = self.rank_by
        value = metrics.get(key) if self.acc.is_main_process else None  # only the main process scores
        if self.acc.num_processes > 1:
            box = [value]
            broadcast_object_list(box, from_process=0)
            value = box[0]
        if not isinstance(value, (int, float)):
            if t.final_model == "best" or t.early_stopping_patience:
                known = ", ".join(k for k, v in metrics.items() if isinstance(v, float)) or "none"
                raise RecipeError(f"train.best_metric: the evaluation gave no {key!r} (it gave: {known}; is data.eval "
                                  f"empty?)")
            return False
        best = state["best_metric"]
        improved = math.isfinite(value) and (best is None or value < best - t.early_stopping_min_delta)
        state["evals_since_best"] = 0 if improved else state["evals_since_best"] + 1
        if math.isfinite(value) and (best is None or value < best):
            state["best_step"], state["best_metric"] = step, float(value)
            return True
        return False

    # ---------------------------------------------------------------------------------------
    def _step(self, model, optimizer, scheduler, group, filler, state) -> tuple[float, float, float]:
        acc, task = self.acc, self.task
        real = [b for b in group if b is not None]
        # 0.0, not 0: a process with an empty shard must all-reduce the same dtype (float32) as the others
        local_units = sum((float(b["units"]) for b in real), 0.0)
        units = acc.reduce(torch.tensor(local_units, device=acc.device), reduction="sum").item() if acc.num_processes > 1 else local_units
        scale = acc.num_processes / max(units, 1.0)  # DDP averages over processes: undo it
        # Buffers (BatchNorm running statistics) change during the forward pass itself: keep a copy so
        # that a skipped step leaves no trace, not even NaN statistics that DDP would then broadcast.
        buffers = [b.detach().clone() for b in model.buffers()]
        total = 0.0
        for i, batch in enumerate(group):
            sync = i == len(group) - 1
            ctx = contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(model)
            with ctx:
                if batch is None:  # this process got no utterance from a tiny global batch
                    loss_sum, _ = task.loss(model, filler)
                    loss = loss_sum * 0.0
                else:
                    loss_sum, _ = task.loss(model, batch)
                    total += float(loss_sum.detach())
                    loss = loss_sum * scale
                acc.backward(loss)
        t = self.recipe.train
        params = [p for p in model.parameters() if p.requires_grad]
        if t.max_grad_norm and t.max_grad_norm > 0:
            norm = acc.clip_grad_norm_(params, t.max_grad_norm)
        else:
            norm = torch.norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
        if torch.isfinite(torch.as_tensor(norm)).item():  # the norm of all-reduced gradients: same on every process
            optimizer.step()
        else:
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers, strict=True):
                    b.copy_(saved)
            state["skipped_nonfinite"] += 1
            logger.warning("non-finite loss or gradient: optimizer step skipped (%d so far)", state["skipped_nonfinite"])
            total = 0.0
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        audio = sum((float(b.get("audio_seconds", 0.0)) for b in real), 0.0)
        if acc.num_processes > 1:
            stats = acc.reduce(torch.tensor([total, audio], device=acc.device), reduction="sum")
            total, audio = float(stats[0]), float(stats[1])
        return total, units, audio


NO_BEST: dict[str, Any] = {"best_step": None, "best_metric": None, "evals_since_best": 0}  # before any evaluation


def follow_budget(scheduler: Any, used: float, total_steps: int, warmup_steps: int = 0,
                  warmup_follows: bool = False) -> None:
    """Move the LR schedule to the share `used` of the time budget when that is ahead of its step count.

    Without it a run that the wall-clock cap stops early is cut mid-schedule, at a high learning rate;
    with it the decay is spread over the budget and a cosine reaches its floor by the deadline. By default
    warm-up keeps counting steps (the decay follows the budget once it is done), so a run planned for many
    more steps than its minutes buy warms up for a larger share of them. `warmup_follows`: the whole
    schedule follows the budget, warm-up included, which then ends when its share of the minutes is spent.
    The position is a step count kept in the scheduler's state, so checkpoints carry it.
    """
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper holds the torch scheduler
    if warmup_follows:
        target = min(total_steps, math.ceil(used * total_steps))
    elif inner.last_epoch < warmup_steps:
        return
    else:
        target = min(total_steps, warmup_steps + math.ceil(used * (total_steps - warmup_steps)))
    if target > inner.last_epoch:
        inner.last_epoch = target - 1
        inner.step()


def run_training(recipe: Recipe) -> dict[str, Any]:
    """Build the accelerator and the recipe's task, then train."""
    from pipeline.tasks import build_task

    t = recipe.train
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.keep_freed_memory:
        keep_freed_memory()
    acc = make_accelerator(recipe)
    logging.basicConfig(level=logging.INFO if acc.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    task = build_task(recipe)
    set_seed(recipe.seed)  # the model's initial weights: the same on every run (and every process)
    task.setup(acc)
    return Trainer(recipe, task, acc).fit()
