#!/usr/bin/env python
"""What training-time augmentation costs: collation time of an ASR task's training batches, per arm.

The ASR task keeps each utterance's clean features in memory after the first epoch. Feature-domain
augmentation (speed, vocal-tract length, tempo) perturbs those cached features; noise and reverberation
(`data.augment.noise`, `data.augment.reverb`) must read the audio again, corrupt it and compute its features.
Each arm collates the same batches (after one untimed pass that fills the feature cache) with the same seed;
the reference is collation without augmentation. The reverberation arm is also run with
`torchaudio.functional.fftconvolve` in place of our convolution (`pipeline.data.noise.reverberate`, which
transforms at a length with small factors).

  python benchmarks/augment.py --model runs/quickstart --data ../shared/data/fsdd/train
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from _machine import interleaved_times, print_report

ARMS: list[tuple[str, list[str]]] = [
    ("none (cached features)", []),
    ("speed + vtlp + tempo (features)", ["data.augment.speed=[0.8,1.2]", "data.augment.vtlp=0.15",
                                         "data.augment.tempo=[1.0,1.6]"]),
    ("noise synthetic", ["data.augment.noise=synthetic"]),
    ("reverb synthetic", ["data.augment.reverb=synthetic"]),
    ("reverb synthetic, torchaudio fftconvolve", ["data.augment.reverb=synthetic"]),
    ("noise + reverb synthetic", ["data.augment.noise=synthetic", "data.augment.reverb=synthetic"]),
]
NEUTRAL = ["data.augment.speed=null", "data.augment.vtlp=0", "data.augment.tempo=null", "data.augment.noise=null",
           "data.augment.reverb=null", "model.mask_time_prob=0", "model.mask_feature_prob=0", "data.eval=null"]


def build(model: str, data: str, overrides: list[str]) -> Any:
    from accelerate import Accelerator

    from pipeline.config import load_recipe
    from pipeline.tasks import build_task

    recipe = load_recipe("recipes/asr/custom_audio.yaml", [f"model.name_or_path={model}", f"data.train={data}",
                                                           "output_dir=/tmp/benchmark_augment", *NEUTRAL, *overrides])
    task = build_task(recipe)
    task.setup(Accelerator(cpu=True))
    return task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an ASR model directory of this toolkit")
    p.add_argument("--data", required=True, help="training data spec")
    p.add_argument("--batch", type=int, default=32, help="utterances per batch")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the table gives the fastest)")
    p.add_argument("--steps", type=int, default=5, help="batches per arm and round")
    p.add_argument("--threads", type=int, default=1, help="torch threads (collation runs beside the model's step)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import torchaudio.functional as AF

    import pipeline.data.noise as noise

    ours = noise.reverberate
    load0 = os.getloadavg()[0]
    arms: dict[str, dict[str, Any]] = {}
    for name, overrides in ARMS:
        task = build(a.model, a.data, overrides)
        n = len(task.train)
        for i in range(0, n, 64):  # fill the feature cache, as the first epoch does
            task.collate([task.train_example(j) for j in range(i, min(i + 64, n))])
        g = torch.Generator().manual_seed(0)
        batches = [torch.randint(0, n, (a.batch,), generator=g).tolist() for _ in range(a.steps)]
        arms[name] = {"task": task, "batches": batches, "next": 0, "seconds": [],
                      "convolve": (lambda x, h: AF.fftconvolve(x, h)[: x.numel()]) if "fftconvolve" in name else ours}

    def call(arm: dict[str, Any]) -> None:
        noise.reverberate = arm["convolve"]
        rows = [arm["task"].train_example(j) for j in arm["batches"][arm["next"] % len(arm["batches"])]]
        arm["next"] += 1
        arm["seconds"].append(arm["task"].collate(rows)["audio_seconds"])

    torch.manual_seed(0)
    times = interleaved_times(arms, call, a.rounds, a.steps)
    noise.reverberate = ours
    best = {name: min(t) for name, t in times.items()}
    ref = best[ARMS[0][0]]
    audio = sum(arms[ARMS[0][0]]["seconds"]) / len(arms[ARMS[0][0]]["seconds"])
    rows = [f"| {name} | {ms:.1f} | {ms / ref:.2f}x | {audio / ms * 1000:.0f} |" for name, ms in best.items()]
    print_report(a.threads, load0, os.getloadavg()[0],
                 [f"batches of {a.batch} utterances ({audio:.1f} s of audio on average), fastest of {a.rounds} "
                  f"interleaved rounds of {a.steps} batches per arm"],
                 ["arm", "ms per batch", "ratio to none", "audio s per collation s"], rows,
                 "the times are upper bounds")


if __name__ == "__main__":
    main()
