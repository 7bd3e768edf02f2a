#!/usr/bin/env python
"""One optimizer step of the quickstart models on this CPU: AdamW, and Muon with its Newton-Schulz iteration in
float32 (`train.muon_precision: auto` on CPUs without bfloat16 units) and in bfloat16 (torch.optim.Muon's own
precision), and the reference: torch.optim.Muon itself, which iterates one matrix at a time where ours stacks
the matrices of a shape into one batched iteration (same AdamW on the other parameters).

Each model is built as its recipe builds it (random init), every trainable parameter gets a fixed random
gradient, and `optimizer.step()` is timed in interleaved rounds (each round times `--steps` calls of each
arm, arms alternating), so that the shared machine's drift hits all arms alike. Reported: median and fastest
round per step, and the bfloat16 arm's time over the float32 arm's. The optimizers are the loop's own
(`pipeline.training.optimizers.build_optimizer`), with each recipe's `train.muon_convolutions`.

  python benchmarks/optimizers.py                     # ASR quickstart (Parakeet) and TTS quickstart (FastSpeech2Conformer)
  python benchmarks/optimizers.py --models asr --threads 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
from typing import Any

import torch
from _machine import (  # benchmarks/_machine.py (scripts run from this folder)
    interleaved_times,
    print_report,
)

from pipeline.config import load_recipe
from pipeline.training.optimizers import build_optimizer, muon_matrices

RECIPES = {"asr": "recipes/asr/quickstart.yaml", "tts": "recipes/tts/quickstart.yaml"}


def _model(kind: str, recipe: Any) -> torch.nn.Module:
    """The recipe's model from its config (no data needed): Parakeet CTC, or FastSpeech2Conformer."""
    torch.manual_seed(0)
    if kind == "asr":
        from transformers import ParakeetCTCConfig, ParakeetForCTC

        cfg = recipe.model.config or {}
        return ParakeetForCTC(ParakeetCTCConfig(vocab_size=32, pad_token_id=31, encoder_config=cfg.get("encoder_config", {}))).train()
    from transformers import FastSpeech2ConformerModel

    from pipeline.tts.acoustic import model_config

    return FastSpeech2ConformerModel(model_config(recipe.model.config, vocab_size=103, n_mels=80)).train()


def _arms(model: torch.nn.Module, train: Any) -> dict[str, torch.optim.Optimizer]:
    t = dataclasses.replace(train, optimizer="adamw")
    arms = {"AdamW": build_optimizer(model, t)}
    for precision in ("float32", "bfloat16"):
        arms[f"Muon {precision}"] = build_optimizer(
            model, dataclasses.replace(train, optimizer="muon", muon_precision=precision))
    # the reference: torch.optim.Muon itself (bfloat16, one matrix at a time) on the same matrices, same AdamW
    ref = build_optimizer(model, dataclasses.replace(train, optimizer="muon", muon_precision="bfloat16"))
    group = ref.muon.param_groups[0]
    ref.muon = torch.optim.Muon(group["params"], lr=group["lr"], weight_decay=group["weight_decay"],
                                momentum=group["momentum"], nesterov=True, ns_steps=group["ns_steps"],
                                adjust_lr_fn="match_rms_adamw")
    arms["torch.optim.Muon"] = ref
    return arms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=sorted(RECIPES), default=["asr", "tts"])
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="torch intra-op thread counts to measure")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per arm and round")
    a = ap.parse_args()

    load0 = os.getloadavg()[0]
    rows, described = [], []
    for kind in a.models:
        recipe = load_recipe(RECIPES[kind], [f"output_dir=runs/bench_optimizers_{kind}"])
        model = _model(kind, recipe)
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        on_muon = muon_matrices(model, recipe.train.muon_convolutions)
        n_all, n_muon = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in on_muon)
        described.append(f"{kind}: {RECIPES[kind]}, {type(model).__name__}, {n_all / 1e6:.2f} M parameters, "
                         f"{len(on_muon)} matrices ({n_muon / 1e6:.2f} M) on Muon "
                         f"(train.muon_convolutions={str(recipe.train.muon_convolutions).lower()})")
        arms = _arms(model, recipe.train)
        # the arms update the same weights: a step's time does not depend on their values
        for threads in a.threads:
            torch.set_num_threads(threads)
            times = interleaved_times(arms, lambda opt: opt.step(), a.rounds, a.steps)  # warm-up: state allocation
            med = {k: statistics.median(v) for k, v in times.items()}
            cells = " | ".join(f"{med[k]:.1f} ({min(times[k]):.1f})" for k in arms)
            rows.append(f"| {kind} | {threads} | {cells} | {med['Muon bfloat16'] / med['Muon float32']:.1f}× "
                        f"| **{med['torch.optim.Muon'] / med['Muon bfloat16']:.1f}×** |")
    load1 = os.getloadavg()[0]

    notes = [f"model {line}" for line in described]
    notes.append(f"{a.rounds} interleaved rounds of {a.steps} steps per arm; ms per optimizer step, median (fastest round)")
    print_report(a.threads[-1], load0, load1, notes,
                 ["model", "threads", "AdamW (ms)", "Muon, float32 iteration (ms)", "Muon, bfloat16 iteration (ms)",
                  "torch.optim.Muon, bfloat16, matrix by matrix (ms)", "bfloat16 / float32",
                  "torch's / ours (bfloat16)"], rows, "the timings are pessimistic for every arm")

if __name__ == "__main__":
    main()
