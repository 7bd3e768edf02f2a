#!/usr/bin/env python
"""What `train.gradient_checkpointing` buys and costs on this machine: peak memory and time of a training step.

Each arm runs in its own process (a process's peak resident memory only grows): the recipe's Parakeet model, built as
`scripts/train.py` builds it and on the same CPU forwards (`speed_up`), one random padded log-mel batch, then
`--steps` forward + backward passes (CTC loss, gradients kept as the optimizer would find them). Reported per arm:
the median step time after the first, and the peak resident memory above what the process held before its first
step (the activations, the gradients and the allocator's slack). Arms alternate `--repeat` times.

  python benchmarks/checkpointing.py                                   # the make-demo recipe's model, 8 x 15 s
  python benchmarks/checkpointing.py --batch 4 --seconds 30 --set model.config.encoder_config.num_hidden_layers=24
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ARMS = ("off", "on")


def _arm(a: argparse.Namespace) -> dict[str, float]:
    """One arm, in this process: its step times (s) and peak memory above the start (MiB)."""
    import torch
    from _machine import peak_mb, rss_mb  # benchmarks/_machine.py (scripts run from this folder)
    from forwards import _batch

    from pipeline.config import load_recipe
    from pipeline.models.fast_forward import speed_up
    from pipeline.tasks import build_task
    from pipeline.training.activation_checkpointing import enable_gradient_checkpointing
    from pipeline.training.loop import make_accelerator

    torch.set_num_threads(a.threads)
    recipe = load_recipe(a.recipe, ["output_dir=runs/bench_checkpointing", *a.set])
    task = build_task(recipe)
    torch.manual_seed(0)
    task.setup(make_accelerator(recipe))
    model = speed_up(task.model).train()
    layers = enable_gradient_checkpointing(model) if a.arm == "on" else 0
    fe = task.feature_extractor
    batch = _batch(model, a.batch, a.seconds, fe.sampling_rate / fe.hop_length)
    start = rss_mb()
    times = []
    for _ in range(a.steps):
        model.zero_grad(set_to_none=False)
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    return {"seconds": statistics.median(times[1:] or times), "peak_mb": peak_mb() - start, "layers": layers,
            "params_m": params / 1e6, "weights_mb": params * 4 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/asr/quickstart.yaml", help="ASR recipe whose Parakeet model is built")
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides (a bigger model: model.config....=N)")
    ap.add_argument("--batch", type=int, default=8, help="utterances per batch")
    ap.add_argument("--seconds", type=float, default=15.0, help="the longest utterance (two are shorter)")
    ap.add_argument("--steps", type=int, default=4, help="training steps per arm and run (the first is not timed)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per arm, arms alternating")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # internal: run one arm here
    a = ap.parse_args()
    if a.arm:
        print(json.dumps(_arm(a)))
        return

    from _machine import print_report

    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    here = os.path.dirname(os.path.abspath(__file__))
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    load0 = os.getloadavg()[0]
    for _ in range(a.repeat):
        for arm in ARMS:
            cmd = [sys.executable, os.path.join(here, "checkpointing.py"), *sys.argv[1:], "--arm", arm]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(f"benchmarks/checkpointing.py: the {arm} arm failed:\n{out.stderr[-2000:]}")
            results[arm].append(json.loads(out.stdout.strip().splitlines()[-1]))
    load1 = os.getloadavg()[0]

    def med(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in results[arm])

    rows = []
    for arm in ARMS:
        rows.append(f"| {arm} | {int(results[arm][0]['layers'])} | {med(arm, 'seconds') * 1000:.0f} "
                    f"({min(r['seconds'] for r in results[arm]) * 1000:.0f}) | **{med(arm, 'seconds') / med('off', 'seconds'):.2f}** "
                    f"| {med(arm, 'peak_mb'):.0f} | **{med(arm, 'peak_mb') / med('off', 'peak_mb'):.2f}** |")
    info = results["off"][0]
    notes = [f"model: {a.recipe} {' '.join(a.set)} (Parakeet CTC, {info['params_m']:.1f} M parameters, "
             f"{info['weights_mb']:.0f} MiB of float32 weights); batch {a.batch} × {a.seconds:g} s; {a.steps} steps per "
             f"run, {a.repeat} runs per arm; step: median over runs of each run's median (fastest run)"]
    print_report(a.threads, load0, load1, notes,
                 ["checkpointing", "layers recomputed", "step ms", "time ratio", "peak memory above start, MiB",
                  "memory ratio"], rows, "the step times are pessimistic for both arms")


if __name__ == "__main__":
    main()
