#!/usr/bin/env python
"""Parakeet (FastConformer) forward passes on this CPU: transformers' forwards vs `pipeline.models.fast_forward`.

Two copies of one model (the recipe's, built as `scripts/train.py` builds it, or a saved `--model`), one
left as transformers made it and one patched by `speed_up`, timed in the same process on the same random
padded batch, in interleaved rounds (each round times `--steps` calls of each arm, arms alternating), so
that the shared machine's drift hits both alike. Reported: median and fastest round per call, and the
speed-up of the medians.

- training: `model.train()`, forward with labels + backward (the CTC loss), gradients cleared each step;
- inference: `model.eval()` under `torch.inference_mode()`, one forward.

The largest difference between the two arms' logits is printed as a check (float rounding only).

  python benchmarks/forwards.py                                  # the make-demo recipe, random init
  python benchmarks/forwards.py --model runs/quickstart --threads 1 2
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
from typing import Any

import torch
from _machine import (  # benchmarks/_machine.py (scripts run from this folder)
    interleaved_times,
    print_report,
)

from pipeline.models.fast_forward import speed_up


def _model(a: argparse.Namespace) -> tuple[Any, Any]:
    """(model, its feature extractor): the saved `--model` or the recipe's, built as training builds it."""
    if a.model:
        from transformers import AutoFeatureExtractor, AutoModelForCTC

        return AutoModelForCTC.from_pretrained(a.model), AutoFeatureExtractor.from_pretrained(a.model)
    from pipeline.config import load_recipe
    from pipeline.tasks import build_task
    from pipeline.training.loop import make_accelerator

    recipe = load_recipe(a.recipe, ["output_dir=runs/bench_forwards"])
    task = build_task(recipe)
    torch.manual_seed(0)
    task.setup(make_accelerator(recipe))
    return task.model, task.feature_extractor


def _batch(model: Any, size: int, seconds: float, frames_per_second: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """`size` utterances of log-mel frames, the first two shorter (padding as duration batches leave it)."""
    g = torch.Generator().manual_seed(seed)
    frames = int(seconds * frames_per_second)
    mask = torch.ones(size, frames, dtype=torch.long)
    mask[0, -frames // 5:] = 0
    if size > 1:
        mask[1, -frames // 12:] = 0
    bins = model.config.encoder_config.num_mel_bins
    labels = torch.randint(1, model.config.vocab_size - 1, (size, max(1, frames // 8)), generator=g)
    return {"input_features": torch.randn(size, frames, bins, generator=g) * mask[..., None], "attention_mask": mask,
            "labels": labels}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/asr/quickstart.yaml", help="ASR recipe whose Parakeet model is built")
    ap.add_argument("--model", default=None, help="a saved Parakeet CTC model directory instead of the recipe's")
    ap.add_argument("--train-batch", type=int, default=6, help="utterances per training batch (2.5 s each)")
    ap.add_argument("--infer-batch", type=int, default=12, help="utterances per inference batch (2.5 s each)")
    ap.add_argument("--seconds", type=float, default=2.5, help="length of the batch's longest utterance")
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="torch intra-op thread counts to measure")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5, help="calls per arm and round")
    a = ap.parse_args()

    base, fe = _model(a)
    hop, rate = int(fe.hop_length), fe.sampling_rate / fe.hop_length
    if type(base).__name__ != "ParakeetForCTC":
        raise SystemExit(f"benchmarks/forwards.py: {type(base).__name__} is not a Parakeet CTC model")
    arms = {"transformers": copy.deepcopy(base), "fast_forward": speed_up(copy.deepcopy(base))}
    train = _batch(base, a.train_batch, a.seconds, rate)
    infer = {k: v for k, v in _batch(base, a.infer_batch, a.seconds, rate, seed=1).items() if k != "labels"}

    with torch.inference_mode():
        logits = [m.eval()(**infer).logits for m in arms.values()]
    diff = float((logits[0] - logits[1]).abs().max())

    def train_step(model: Any) -> None:
        model.train()
        model(**train).loss.backward()
        model.zero_grad(set_to_none=True)

    def infer_step(model: Any) -> None:
        model.eval()
        with torch.inference_mode():
            model(**infer)

    load0 = os.getloadavg()[0]
    rows = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        for mode, call, size in (("training (forward + backward)", train_step, a.train_batch),
                                 ("inference", infer_step, a.infer_batch)):
            times = interleaved_times(arms, call, a.rounds, a.steps)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append(f"| {mode} | {threads} | {size} × {a.seconds:g} s | {med['transformers']:.1f} "
                        f"({min(times['transformers']):.1f}) | {med['fast_forward']:.1f} ({min(times['fast_forward']):.1f}) "
                        f"| **{med['transformers'] / med['fast_forward']:.2f}** |")
    load1 = os.getloadavg()[0]

    n_params = sum(p.numel() for p in base.parameters())
    notes = [f"model: {a.model or a.recipe} (Parakeet CTC, {n_params / 1e6:.2f} M parameters, log-mel hop {hop}); "
             f"{a.rounds} interleaved rounds of {a.steps} calls per arm; ms per call, median (fastest round)",
             f"check: largest logit difference between the arms {diff:.2e}"]
    print_report(a.threads[-1], load0, load1, notes,
                 ["pass", "threads", "batch", "transformers (ms)", "fast_forward (ms)", "speed-up"], rows,
                 "the timings are pessimistic for both arms")

if __name__ == "__main__":
    main()
