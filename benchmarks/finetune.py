#!/usr/bin/env python
"""CTC fine-tuning throughput on this machine: our training loop vs the Hugging Face reference recipe.

Both arms train the same model (built from one recipe by our own `build_task` + `ASRTask.setup`, after the
same `set_seed`, so the initial weights are identical) on the same utterances for the same number of epochs
with the same learning rate, schedule, warm-up, weight decay, Adam betas, gradient clipping and seed, and
without augmentation (speed perturbation, VTLP and SpecAugment masking are all switched off) and with the model's
own CTC loss alone (the recipe's intermediate CTC off), so that only
the training machinery differs:

- reference: `transformers.Trainer` as in transformers' examples/pytorch/speech-recognition/
  run_speech_recognition_ctc.py: the training table is vectorised once with `datasets.map` (features,
  `input_length`, labels), batches are a fixed number of utterances per step from the length-grouped sampler
  (`train_sampling_strategy="group_by_length"`, `length_column_name="input_length"`; transformers 5 renamed
  the old `group_by_length=True`), padded by a `DataCollatorCTCWithPadding` (labels padded with -100), with
  the example's default `ctc_loss_reduction="mean"`. Its batch size is chosen so that a step holds about as
  many seconds of audio as one of ours (`--ref-batch-size` sets it).
- ours: `pipeline.training.loop.run_training(recipe)` (what scripts/train.py runs): batches packed by total
  padded seconds (`train.batch_seconds`) by `pipeline.data.batching.DurationBatchSampler`, features computed
  on the fly during the first epoch and kept in memory afterwards.

Each arm runs in a fresh process (spawn), so its peak memory is its own. What is measured:
- train audio-s / wall-s: (sum of the training utterances' durations x epochs) / training wall time. The
  reference's time is `trainer.train()` (its sampler's length scan, data loading, collation, steps); its
  `datasets.map` vectorisation is excluded (printed separately as data preparation). Ours is the training
  loop's own clock (`train_seconds` in the final checkpoint: from the start of `Trainer.fit` to the last
  step), which includes computing the features in the first epoch (the work the reference does in its
  `map`), but not data measurement, model construction, the final checkpoint or saving.
  So the plain ratio charges the feature computation to ours only; the "with it" columns add the
  reference's `map` time to its clock, which makes the two like for like (raw audio to trained model).
  With mid-run evaluations and checkpoints switched off in both arms.
- CPU time: process CPU seconds of the whole training call (ours: `run_training` including setup and saving;
  reference: `trainer.train()`), in the notes under the table. On a shared machine the wall clock includes
  time spent waiting for a core.
- padding %: padded share of the model-input frames of the batches each arm actually forms (reference:
  recorded by its collator during training; ours: the `DurationBatchSampler` batches of every epoch, which are
  a pure function of seed, epoch and durations, measured in seconds, which the frame counts follow to within
  one frame per utterance).
- peak RSS: the arm's process peak resident set size right after training (before evaluation).
- WER: greedy decoding of the evaluation split by the same code for both arms (`Transcriber` +
  `transcribe_table` + `score`, exactly what `ASRTask.evaluate` runs; jiwer underneath).
With `--repeat N` each arm trains N times (each in its own process) and the fastest run is kept.

  python benchmarks/finetune.py                                    # full size: the recipe's epochs
  python benchmarks/finetune.py --epochs 1 --train-limit 64 --eval-limit 50     # smoke test
  python benchmarks/finetune.py --recipe recipes/asr/wav2vec2_quickstart.yaml --epochs 2

Outputs (our model directory, the reference's Trainer folder) go to `--output` (default runs/bench_finetune);
its `ours/` and `reference/` sub-folders are replaced at every run. Timings are only printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _machine import (  # benchmarks/_machine.py (scripts run from this folder)
    command_line,
    load_note,
    machine_line,
    peak_mb,
)

ARMS = ("reference", "ours")
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass
class Setup:
    """Everything an arm needs to rebuild the same recipe in its own process (picklable)."""

    recipe: str
    overrides: list[str]
    epochs: int | None
    train_limit: int | None
    eval_limit: int | None
    threads: int
    output: str
    ref_batch_size: int | None = None


def _recipes(s: Setup, arm: str) -> tuple[Any, Any]:
    """(training recipe, evaluation data spec): the user's recipe, like for like in both arms.

    The training recipe has no evaluation split (both arms are evaluated afterwards by the same code),
    no augmentation or masking, no intermediate CTC, no mid-run evaluation or checkpoint and no wall-clock cap.
    """
    from pipeline.config import load_recipe

    base = load_recipe(s.recipe, s.overrides)
    eval_spec = base.data.eval
    if eval_spec is not None and s.eval_limit is not None:
        eval_spec.limit = s.eval_limit
    never = 10**9
    bench = [
        f"output_dir={Path(s.output) / arm}", "data.eval=null", "data.augment.speed=null", "data.augment.vtlp=0",
        "model.mask_time_prob=0", "model.mask_feature_prob=0", "model.inter_ctc_weight=0",  # the reference has one loss
        "train.optimizer=adamw",  # and AdamW: same hyper-parameters
        "train.max_minutes=null", "train.max_steps=null",
        f"train.eval_every={never}", f"train.save_every={never}", "train.resume=false", f"train.threads={s.threads}",
    ]
    if s.epochs is not None:
        bench.append(f"train.epochs={s.epochs}")
    if s.train_limit is not None:
        bench.append(f"data.train.limit={s.train_limit}")
    return load_recipe(s.recipe, [*s.overrides, *bench]), eval_spec


def _table(recipe: Any, spec: Any, split: str) -> Any:
    """A prepared split exactly as ASRTask.setup prepares it (measured once, cached by file)."""
    from pipeline.data.prepare import SkipReport, prepare_split
    from pipeline.data.sources import describe_spec, load_spec
    from pipeline.data.text import get_normalizer
    from pipeline.evaluation.evaluate import default_cache_dir

    d = recipe.data
    return prepare_split(load_spec(spec), split, describe_spec(spec), SkipReport(), normalize=get_normalizer(d.normalizer),
                         min_duration=d.min_duration, max_duration=d.max_duration, need_text=True, on_bad_rows=d.on_bad_rows,
                         cache_dir=d.cache_dir or default_cache_dir(), num_proc=d.num_proc)


def _our_batches(recipe: Any, durations: list[float]) -> list[list[int]]:
    """Every batch of every epoch that our loop forms (the same sampler `Trainer._sampler` builds on one process)."""
    from pipeline.data.batching import DurationBatchSampler

    t = recipe.train
    sampler = DurationBatchSampler(durations, batch_seconds=t.batch_seconds, max_batch_size=t.max_batch_size,
                                   max_padding=t.max_padding, seed=recipe.seed)
    return [b for e in range(t.epochs) for b in sampler.global_batches(e)]


def _wer(recipe: Any, model: Any, feature_extractor: Any, tokenizer: Any, table: Any) -> float:
    """Greedy WER on `table` by the code ASRTask.evaluate runs, for either arm's model."""
    from pipeline.evaluation.evaluate import score, transcribe_table
    from pipeline.evaluation.inference import Transcriber

    transcriber = Transcriber(model, feature_extractor, tokenizer, device="cpu", batch_seconds=recipe.eval.batch_seconds,
                              max_batch_size=recipe.eval.max_batch_size)
    hyps = transcribe_table(None, transcriber, table)
    metrics, _ = score(table, hyps, recipe.data.normalizer, details=False)
    return float(metrics["wer"])


@dataclass
class DataCollatorCTCWithPadding:
    """The reference example's collator; it also records (utterances, longest, total) input frames per batch.

    `processor.pad(inputs)` and `processor.pad(labels=...)` of the example are the feature extractor's and the
    tokenizer's `pad` (what Wav2Vec2Processor.pad forwards to); ParakeetProcessor has no `pad`, so call them directly.
    """

    feature_extractor: Any
    tokenizer: Any
    input_name: str = "input_values"
    padding: bool | str = "longest"
    batches: list[tuple[int, int, int]] = field(default_factory=list)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        input_features = [{self.input_name: f[self.input_name]} for f in features]
        label_features = [{"input_ids": f["labels"]} for f in features]
        sizes = [len(f[self.input_name]) for f in features]
        self.batches.append((len(sizes), max(sizes), sum(sizes)))
        batch = self.feature_extractor.pad(input_features, padding=self.padding, return_tensors="pt")
        labels_batch = self.tokenizer.pad(label_features, padding=self.padding, return_tensors="pt")
        batch["labels"] = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        if "attention_mask" in batch:
            batch["attention_mask"] = batch["attention_mask"].to(torch.long)
        return batch


def _reference(s: Setup) -> dict[str, Any]:
    from transformers import Trainer, TrainingArguments, set_seed

    from pipeline.audio import read_audio
    from pipeline.tasks import build_task
    from pipeline.training.loop import make_accelerator

    recipe, eval_spec = _recipes(s, "reference")
    t = recipe.train
    shutil.rmtree(recipe.output_dir, ignore_errors=True)
    # The model, feature extractor, tokenizer and prepared table exactly as run_training builds them.
    acc = make_accelerator(recipe)
    task = build_task(recipe)
    set_seed(recipe.seed)
    task.setup(acc)
    model, fe, tok, table = task.model, task.feature_extractor, task.tokenizer, task.train
    model.config.ctc_loss_reduction = "mean"  # the example's default (ours sums and divides by the step's tokens)
    durations = task.train_durations()
    ours = _our_batches(recipe, durations)
    per_step = sum(durations) * t.epochs / len(ours)
    batch_size = s.ref_batch_size or max(1, round(per_step / (sum(durations) / len(durations))))

    key, sr = fe.model_input_names[0], int(fe.sampling_rate)

    def prepare_dataset(row: dict[str, Any]) -> dict[str, Any]:
        audio = read_audio(row["audio"], sr)[0]
        return {key: fe(audio, sampling_rate=sr)[key][0], "input_length": len(audio), "labels": tok(row["text"]).input_ids}

    with tempfile.TemporaryDirectory(dir=s.output) as tmp:
        t0 = time.perf_counter()
        vectorized = table.map(prepare_dataset, remove_columns=table.column_names, cache_file_name=f"{tmp}/train.arrow",
                               desc="preprocess train dataset")
        prep = time.perf_counter() - t0
        collator = DataCollatorCTCWithPadding(fe, tok, input_name=key)
        args = TrainingArguments(
            output_dir=recipe.output_dir, per_device_train_batch_size=batch_size, gradient_accumulation_steps=t.gradient_accumulation,
            num_train_epochs=t.epochs, learning_rate=t.learning_rate, lr_scheduler_type=SCHEDULES[t.lr_schedule],
            warmup_steps=t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio, weight_decay=t.weight_decay,
            adam_beta1=0.9, adam_beta2=t.adam_beta2, adam_epsilon=1e-8, max_grad_norm=t.max_grad_norm, seed=recipe.seed,
            train_sampling_strategy="group_by_length", length_column_name="input_length", eval_strategy="no",
            save_strategy="no", report_to="none", logging_steps=t.log_every, use_cpu=True,
            dataloader_num_workers=t.num_workers, bf16=t.mixed_precision == "bf16",
        )
        trainer = Trainer(model=model, args=args, train_dataset=vectorized, data_collator=collator, processing_class=fe)
        t0, c0 = time.perf_counter(), time.process_time()
        result = trainer.train()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = peak_mb()
        steps = int(result.global_step)
        del trainer, vectorized
    padded = sum(n * longest for n, longest, _ in collator.batches)
    real = sum(total for _, _, total in collator.batches)
    eval_table = _table(recipe, eval_spec, "eval") if eval_spec is not None else None
    wer = _wer(recipe, model, fe, tok, eval_table) if eval_table is not None else float("nan")
    return {"wall": wall, "cpu": cpu, "prep": prep, "audio": sum(durations) * t.epochs, "steps": steps,
            "batches": len(collator.batches), "padding": 1.0 - real / max(padded, 1), "peak": peak, "wer": wer,
            "epochs": t.epochs, "batch_size": batch_size, "audio_per_step": sum(durations) * t.epochs / max(steps, 1),
            "our_audio_per_step": per_step, "params": sum(p.numel() for p in model.parameters()),
            "utterances": len(durations), "eval_utterances": len(eval_table) if eval_table is not None else 0}


def _ours(s: Setup) -> dict[str, Any]:
    from pipeline.evaluation.evaluate import load_model_dir
    from pipeline.training.checkpoint import STATE_FILE, latest_checkpoint
    from pipeline.training.loop import run_training

    recipe, eval_spec = _recipes(s, "ours")
    shutil.rmtree(recipe.output_dir, ignore_errors=True)  # a stale checkpoint would be read as this run's
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_training(recipe)
    call_wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_mb()
    ckpt = latest_checkpoint(recipe.output_dir)
    state = json.loads((ckpt / STATE_FILE).read_text()) if ckpt is not None else {}
    wall = float(state.get("train_seconds", 60 * summary["train_minutes"]))
    durations = [float(x) for x in _table(recipe, recipe.data.train, "train")["duration"]]
    batches = _our_batches(recipe, durations)
    padded = sum(len(b) * max(durations[i] for i in b) for b in batches)
    real = sum(durations[i] for b in batches for i in b)
    model, fe, tok, _ = load_model_dir(recipe.output_dir, device="cpu")
    eval_table = _table(recipe, eval_spec, "eval") if eval_spec is not None else None
    wer = _wer(recipe, model, fe, tok, eval_table) if eval_table is not None else float("nan")
    steps = int(summary["steps"])
    return {"wall": wall, "cpu": cpu, "call_wall": call_wall, "audio": sum(durations) * recipe.train.epochs, "steps": steps,
            "batches": len(batches), "padding": 1.0 - real / max(padded, 1e-9), "peak": peak, "wer": wer,
            "epochs": recipe.train.epochs, "epochs_completed": summary.get("epochs_completed"),
            "batch_seconds": recipe.train.batch_seconds, "audio_per_step": real / max(steps, 1),
            "params": sum(p.numel() for p in model.parameters()), "utterances": len(durations),
            "eval_utterances": len(eval_table) if eval_table is not None else 0}


def _run(arm: str, s: Setup, out: Any) -> None:
    import torch

    torch.set_num_threads(s.threads)
    try:
        r = (_reference if arm == "reference" else _ours)(s)
        out.put({"ok": True, **r})
    except Exception as exc:  # noqa: BLE001 - reported in the table
        import traceback

        traceback.print_exc()
        out.put({"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/asr/quickstart.yaml", help="ASR recipe both arms train")
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's train.epochs")
    ap.add_argument("--train-limit", type=int, default=None, help="train on the first N training utterances only")
    ap.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N evaluation utterances only")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads in each arm")
    ap.add_argument("--repeat", type=int, default=1, help="train each arm this many times (fresh processes), keep the fastest")
    ap.add_argument("--ref-batch-size", type=int, default=None,
                    help="reference utterances per step (default: as many seconds of audio per step as ours)")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run")
    ap.add_argument("--output", default="runs/bench_finetune", help="folder for the arms' outputs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override applied to both arms (repeatable), e.g. --set train.learning_rate=1e-3")
    a = ap.parse_args()
    Path(a.output).mkdir(parents=True, exist_ok=True)
    s = Setup(recipe=a.recipe, overrides=a.overrides, epochs=a.epochs, train_limit=a.train_limit, eval_limit=a.eval_limit,
              threads=a.threads, output=a.output, ref_batch_size=a.ref_batch_size)
    ctx = mp.get_context("spawn")
    load0 = os.getloadavg()
    best: dict[str, dict[str, Any]] = {}
    for _ in range(a.repeat):
        for arm in [x for x in ARMS if x in a.arms]:
            q = ctx.Queue()
            proc = ctx.Process(target=_run, args=(arm, s, q))
            proc.start()
            r = q.get()
            proc.join()
            if arm not in best or (r["ok"] and (not best[arm]["ok"] or r["wall"] < best[arm]["wall"])):
                best[arm] = r
    load1 = os.getloadavg()

    print()
    print(machine_line(a.threads, load0[0], load1[0]))
    print(f"command: {command_line()}")
    print(f"recipe: {a.recipe} (no augmentation, no masking){' + ' + ' '.join(a.overrides) if a.overrides else ''}")
    ok = {k: v for k, v in best.items() if v["ok"]}
    any_r = next(iter(ok.values()), None)
    if any_r is not None:
        print(f"data: {any_r['utterances']} training utterances x {any_r['epochs']} epochs = {any_r['audio']:.0f} s of audio; "
              f"{any_r['params'] / 1e6:.2f} M parameters")
    if "reference" in ok:
        r = ok["reference"]
        print(f"batches: ours up to {ok['ours']['batch_seconds'] if 'ours' in ok else '?'} padded seconds per step "
              f"(train.batch_seconds), mean {r['our_audio_per_step']:.1f} s of audio per step; reference "
              f"per_device_train_batch_size={r['batch_size']}, mean {r['audio_per_step']:.1f} s of audio per step")
    print()
    print("| arm | epochs | steps | train wall (s) | train audio-s / wall-s | ratio vs reference | + feature preparation "
          "outside the clock (s) | audio-s / wall-s with it | ratio with it | padding % | peak RSS (MB) | WER |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ref_speed = ok["reference"]["audio"] / ok["reference"]["wall"] if "reference" in ok else None
    ref_full = ok["reference"]["audio"] / (ok["reference"]["wall"] + ok["reference"]["prep"]) if "reference" in ok else None
    names = {"reference": "reference (transformers.Trainer, group_by_length)", "ours": "ours (run_training, duration batches)"}
    for arm in [x for x in ARMS if x in best]:
        r = best[arm]
        if not r["ok"]:
            print(f"| {names[arm]} | failed: {r['error']} | - | - | - | - | - | - | - | - | - | - |")
            continue
        speed = r["audio"] / r["wall"]
        ratio = f"{speed / ref_speed:.2f}" if ref_speed else "-"
        prep = r.get("prep", 0.0)
        full = r["audio"] / (r["wall"] + prep)
        ratio_full = f"{full / ref_full:.2f}" if ref_full else "-"
        wer = "-" if r["wer"] != r["wer"] else f"{100 * r['wer']:.1f} %"
        print(f"| {names[arm]} | {r['epochs']} | {r['steps']} | {r['wall']:.1f} | {speed:.1f} | {ratio} | {prep:.1f} | "
              f"{full:.1f} | {ratio_full} | {100 * r['padding']:.1f} | {r['peak']:.0f} | {wer} |")
    print()
    if "reference" in ok:
        r = ok["reference"]
        print(f"reference: data preparation (datasets.map: features + labels, not in its time) {r['prep']:.1f} s; "
              f"CPU {r['cpu']:.1f} s during trainer.train() ({r['cpu'] / r['wall']:.2f} cores busy)")
    if "ours" in ok:
        r = ok["ours"]
        print(f"ours: training loop {r['wall']:.1f} s of a {r['call_wall']:.1f} s run_training call (setup, final "
              f"checkpoint and saving outside the loop); CPU {r['cpu']:.1f} s during the call; "
              f"{r['epochs_completed']} epochs completed")
    if any_r is not None:
        print(f"WER: greedy decoding of {any_r['eval_utterances']} evaluation utterances, the same code for both arms")
    print(load_note(load1[0], "the wall-clock rates are pessimistic"))


if __name__ == "__main__":
    main()
