#!/usr/bin/env python
"""Vocoder sampling speed on this machine: our DiffWave vs the `diffwave` PyPI package (LMNT), same mels.

Each row runs in a fresh process (so peak memory is its own): a model with random weights (speed does
not depend on them) vocodes a mel of the given length with 6 steps (DiffWave's fast schedule) or 50
(full DDPM) after one short warm-up. RTF = synthesis seconds / audio seconds (< 1: faster than real time),
from wall-clock time and from the process's CPU time. On a shared machine the wall clock includes
time spent waiting for a core; with one thread, CPU time is what an otherwise idle core would take.
Synthesis time is the fastest of `--repeat` runs (the machine may be shared).
Peak memory = the process's peak resident set size during synthesis minus its size just before.

  python benchmarks/vocoder.py                       # the table in recipes/tts/README.md
  python benchmarks/vocoder.py --presets small --steps 6 --seconds 2 --threads 2 --sample-rate 16000

The `diffwave` package is optional (`pip install --no-deps diffwave`); without it its rows are skipped.
Its models are built at the same depth and width as ours (its step MLP is always 512 wide, so it has
a few more parameters at the small size) and sampled with its own `diffwave.inference.predict`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from typing import Any

from _machine import (  # benchmarks/_machine.py (scripts run from this folder)
    load_note,
    machine_line,
    peak_mb,
    rss_mb,
)

HOP = 256


def _mel(frames: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 80, frames, generator=g) * 5.0 - 9.0  # within a natural-log mel's range


def _ours(preset: str, steps: int, frames: int, repeat: int) -> tuple[tuple[float, float], float, float, int]:
    import torch

    from pipeline.tts.diffwave import DiffWave, model_kwargs
    from pipeline.tts.sampling import sample

    torch.manual_seed(0)
    model = DiffWave(**model_kwargs({"preset": preset})).eval()
    params = sum(p.numel() for p in model.parameters())
    sample(model, _mel(16), sampler="fast", steps=6)  # warm-up
    mel = _mel(frames)
    before = rss_mb()
    times = []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        sample(model, mel, sampler="fast", steps=steps, generator=torch.Generator().manual_seed(0))
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return min(times), before, peak_mb(), params


def _lmnt(preset: str, steps: int, frames: int, repeat: int) -> tuple[tuple[float, float], float, float, int]:
    import diffwave.inference as inference
    import torch
    from diffwave.model import DiffWave as LmntDiffWave
    from diffwave.params import AttrDict, params

    from pipeline.tts.diffwave import PRESETS

    size = PRESETS[preset]
    p = AttrDict(dict(params))
    p.override({"residual_layers": size["residual_layers"], "residual_channels": size["residual_channels"],
                "dilation_cycle_length": size["dilation_cycle"]})
    inference.base_params = p  # predict() builds its model from the module's base_params
    torch.manual_seed(0)
    model = LmntDiffWave(p)
    n_params = sum(x.numel() for x in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"model": model.state_dict()}, f"{tmp}/weights.pt")
        del model
        cpu = torch.device("cpu")
        inference.predict(_mel(16)[0], model_dir=tmp, device=cpu, fast_sampling=True)  # loads the model; warm-up
        mel = _mel(frames)[0]
        before = rss_mb()
        times = []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            inference.predict(mel, model_dir=tmp, device=cpu, fast_sampling=steps == 6)
            times.append((time.perf_counter() - t0, time.process_time() - c0))
        return min(times), before, peak_mb(), n_params


def _row(impl: str, preset: str, steps: int, seconds: float, sample_rate: int, threads: int, repeat: int, out: Any) -> None:
    import torch

    torch.set_num_threads(threads)
    frames = round(seconds * sample_rate / HOP)
    try:
        (elapsed, cpu), before, peak, n = (_ours if impl == "ours" else _lmnt)(preset, steps, frames, repeat)
        audio = frames * HOP / sample_rate
        out.put({"ok": True, "elapsed": elapsed, "cpu": cpu, "rtf": elapsed / audio, "cpu_rtf": cpu / audio, "audio": audio,
                 "mem": max(0.0, peak - before), "params": n})
    except Exception as exc:  # noqa: BLE001 - reported in the table
        out.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["small", "base"])
    ap.add_argument("--steps", nargs="+", type=int, default=[6, 50])
    ap.add_argument("--seconds", nargs="+", type=float, default=[2.0, 5.0])
    ap.add_argument("--fifty-step-seconds", type=float, default=2.0,
                    help="run 50-step rows only on this mel length (they take 8x longer); 0: on every length")
    ap.add_argument("--sample-rate", type=int, default=22050, help="sets how many frames a second of audio has")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3,
                    help="time each 6-step row this many times and keep the fastest (50-step rows: once)")
    ap.add_argument("--impl", nargs="+", choices=("ours", "lmnt"), default=["ours", "lmnt"], help="implementations to time")
    ap.add_argument("--no-lmnt", action="store_true", help="skip the diffwave package")
    a = ap.parse_args()
    try:
        import diffwave.inference  # noqa: F401

        have_lmnt = not a.no_lmnt and "lmnt" in a.impl
        lmnt_note = ""
    except Exception as exc:  # noqa: BLE001
        have_lmnt = False
        lmnt_note = f"diffwave package not importable ({type(exc).__name__}): its rows are skipped"
    ctx = mp.get_context("spawn")
    load0 = os.getloadavg()
    print(f"{machine_line(a.threads, load0[0])}; sample rate {a.sample_rate} Hz, hop {HOP}")
    if lmnt_note:
        print(lmnt_note)
    print("| implementation | preset | params | steps | audio (s) | wall (s) | RTF (wall) | CPU (s) | RTF (CPU time) "
          "| peak memory (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in a.presets:
        for impl in [i for i in a.impl if i == "ours" or have_lmnt]:
            for steps in a.steps:
                for seconds in a.seconds:
                    if steps > 6 and a.fifty_step_seconds and seconds != a.fifty_step_seconds:
                        continue
                    q = ctx.Queue()
                    proc = ctx.Process(target=_row, args=(impl, preset, steps, seconds, a.sample_rate, a.threads,
                                                                   a.repeat if steps <= 6 else 1, q))
                    proc.start()
                    r = q.get()
                    proc.join()
                    name = "speech-pipeline DiffWave" if impl == "ours" else "diffwave (PyPI, LMNT)"
                    if not r["ok"]:
                        print(f"| {name} | {preset} | - | {steps} | {seconds:.0f} | failed: {r['error']} | - | - | - | - |")
                        continue
                    print(f"| {name} | {preset} | {r['params'] / 1e6:.2f} M | {steps} | {r['audio']:.2f} | {r['elapsed']:.2f} | "
                          f"{r['rtf']:.2f} | {r['cpu']:.2f} | {r['cpu_rtf']:.2f} | {r['mem']:.0f} |", flush=True)
    load1 = os.getloadavg()
    print(load_note(load1[0], "wall-clock RTFs are pessimistic; with --threads 1, RTF (CPU time) is the idle-core figure"))


if __name__ == "__main__":
    main()
