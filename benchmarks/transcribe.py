#!/usr/bin/env python
"""Transcription speed on this machine: our Transcriber vs `transformers.pipeline("automatic-speech-recognition")`.

One saved model (`--model DIR`, e.g. a run of scripts/train.py) transcribes one data spec (`--data`) four
ways, each in a fresh process (spawn) so that its peak memory is its own:

- pipeline bs1 / pipeline bs16: `transformers.pipeline("automatic-speech-recognition", model=DIR)` called on
  the list of waveforms in table order with `batch_size=1` / `batch_size=16` (`--pipeline-batch`);
- ours bs1: `pipeline.evaluation.inference.Transcriber(..., max_batch_size=1)`, one utterance at a time;
- ours batched: `Transcriber` with its defaults (length-sorted batches of up to `batch_seconds` padded seconds);
- onnx bs1 / onnx batched: the same two on ONNX Runtime (`--runtime onnx`: the model directory's `model.onnx`,
  which `scripts/export_onnx.py` writes; exported first when the directory has none).

Audio is read once per process with our loader (soundfile + resampling, `pipeline.audio.read_audio`) before
any timing, so every arm times the same thing: features, model and greedy CTC decoding. After a warm-up on
the shortest utterance each arm transcribes the whole set `--repeat` times and the fastest run is kept; the
arms run `--rounds` times, interleaved (pipeline bs1, bs16, ours bs1, ours batched, then again), each time in
a fresh process, and each arm's fastest round is reported: on a shared machine a slow minute then slows
every arm alike rather than one arm's whole measurement.
RTF = seconds / audio seconds (< 1: faster than real time), from wall-clock time and from the process's CPU
time; on a shared machine the wall clock includes time spent waiting for a core. The speed-up columns are
the pipeline's wall RTF divided by the arm's. Peak RSS is the process's peak resident set size; "+ during"
is that peak minus the size just before the timed runs (model and audio already loaded).

Checks printed under the table: our batched transcripts must equal our one-at-a-time ones (0 mismatches);
pipeline bs16 against bs1; ours against the pipeline at bs1. WER of every arm against the references uses the
normaliser our evaluation uses (`speech_pipeline.json` of the model, else `default`) and jiwer (`score`).

`--max-length-probe` also reports the longest single utterance the default batch budgets take in one batch
(`Transcriber`'s default `batch_seconds`, and the training recipe's `train.batch_seconds` from DIR/recipe.yaml)
and what it costs: test utterances are concatenated into one long input of each length in `--probe-seconds`
and of the inference budget, transcribed once in a fresh process (peak RSS, RTF), and one of the training
budget's length goes through one training forward + backward pass (no optimizer step).

  python benchmarks/transcribe.py --model runs/exp8                              # data/synth/test
  python benchmarks/transcribe.py --model runs/exp8 --data ../shared/data/fsdd/dev --limit 100
  python benchmarks/transcribe.py --model runs/exp8 --limit 20 --rounds 1 --repeat 1 --max-length-probe --probe-seconds 30
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

from _machine import (  # benchmarks/_machine.py (scripts run from this folder)
    command_line,
    load_note,
    machine_line,
    peak_mb,
    rss_mb,
)

ARMS = ("pipeline-bs1", "pipeline-bs16", "ours-bs1", "ours-batched", "onnx-bs1", "onnx-batched")


def _normalizer(model_dir: str, given: str | None) -> str:
    """The normaliser our evaluation would use for this model (its speech_pipeline.json), unless given."""
    if given:
        return given
    meta = Path(model_dir) / "speech_pipeline.json"
    return json.loads(meta.read_text()).get("normalizer", "default") if meta.is_file() else "default"


def _data(model_dir: str, data: str, limit: int | None, normalizer: str) -> tuple[Any, list[Any], int]:
    """(prepared table, waveforms at the model's rate, rate): rows as evaluate_model prepares them."""
    from transformers import AutoFeatureExtractor

    from pipeline.audio import read_audio
    from pipeline.config import DataSpec
    from pipeline.data.prepare import SkipReport, prepare_split
    from pipeline.data.sources import load_spec
    from pipeline.data.text import get_normalizer
    from pipeline.evaluation.evaluate import default_cache_dir

    sr = int(AutoFeatureExtractor.from_pretrained(model_dir).sampling_rate)
    table = prepare_split(load_spec(DataSpec(path=data, limit=limit)), "eval", data, SkipReport(),
                          normalize=get_normalizer(normalizer), min_duration=0.0, max_duration=3600.0, need_text=True,
                          on_bad_rows="skip", cache_dir=default_cache_dir())
    return table, [read_audio(a, sr)[0] for a in table["audio"]], sr


def _timed(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """(fastest wall seconds, its CPU seconds, its result) over `repeat` runs."""
    best: tuple[float, float, Any] | None = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        run = (time.perf_counter() - t0, time.process_time() - c0, out)
        if best is None or run[0] < best[0]:
            best = run
    assert best is not None
    return best


def _arm(arm: str, a: dict[str, Any], q: Any) -> None:
    import torch

    torch.set_num_threads(a["threads"])
    try:
        from pipeline.evaluation.evaluate import score

        table, audios, sr = _data(a["model"], a["data"], a["limit"], a["normalizer"])
        shortest = min(audios, key=len)
        if arm.startswith("pipeline"):
            from transformers import pipeline

            asr = pipeline("automatic-speech-recognition", model=a["model"], device="cpu")
            bs = 1 if arm == "pipeline-bs1" else a["pipeline_batch"]
            asr([shortest], batch_size=1)  # warm-up

            def run() -> list[str]:
                return [o["text"] for o in asr(list(audios), batch_size=bs)]
        else:
            from pipeline.evaluation.evaluate import load_model_dir
            from pipeline.evaluation.inference import Transcriber

            model, fe, tok, _ = load_model_dir(a["model"], device="cpu", runtime="onnx" if arm.startswith("onnx") else "torch")
            one = arm.endswith("bs1")
            transcriber = Transcriber(model, fe, tok, max_batch_size=1) if one else Transcriber(model, fe, tok)
            bs = "1" if one else f"<= {transcriber.batch_seconds:g} s, <= {transcriber.max_batch_size}"
            transcriber.transcribe([shortest])  # warm-up

            def run() -> list[str]:
                return transcriber.transcribe(audios)
        before = rss_mb()
        wall, cpu, hyps = _timed(run, a["repeat"])
        peak = peak_mb()
        audio = sum(len(x) for x in audios) / sr
        metrics, _ = score(table, hyps, a["normalizer"], details=False)
        q.put({"ok": True, "wall": wall, "cpu": cpu, "audio": audio, "peak": peak, "during": max(0.0, peak - before),
               "hyps": hyps, "wer": float(metrics["wer"]), "n": len(audios), "batch": str(bs)})
    except Exception as exc:  # noqa: BLE001 - reported in the table
        import traceback

        traceback.print_exc()
        q.put({"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def _long_input(audios: list[Any], texts: list[str], sr: int, seconds: float) -> tuple[Any, str]:
    """One waveform of exactly `seconds`, test utterances end to end (cycled), and their joined transcripts."""
    import numpy as np

    need, parts, words, i = round(seconds * sr), [], [], 0
    while sum(len(p) for p in parts) < need:
        parts.append(audios[i % len(audios)])
        words.append(texts[i % len(texts)])
        i += 1
    return np.concatenate(parts)[:need], " ".join(words)


def _probe(kind: str, seconds: float, a: dict[str, Any], q: Any) -> None:
    import torch

    torch.set_num_threads(a["threads"])
    try:
        from pipeline.evaluation.evaluate import load_model_dir
        from pipeline.evaluation.inference import Transcriber, featurize

        table, audios, sr = _data(a["model"], a["data"], a["limit"], a["normalizer"])
        model, fe, tok, _ = load_model_dir(a["model"], device="cpu")
        wave, text = _long_input(audios, list(table["text"]), sr, seconds)
        del audios, table
        if kind == "inference":
            transcriber = Transcriber(model, fe, tok)
            transcriber.transcribe([wave[: sr // 2]])  # warm-up
            before = rss_mb()
            wall, cpu, _ = _timed(lambda: transcriber.transcribe([wave]), 1)
        else:
            model.train()
            inputs = featurize(fe, [wave])
            inputs.pop("frames_mask")
            labels = torch.tensor([tok(text).input_ids])
            before = rss_mb()

            def step() -> None:
                model(**inputs, labels=labels).loss.backward()

            wall, cpu, _ = _timed(step, 1)
        peak = peak_mb()
        q.put({"ok": True, "wall": wall, "cpu": cpu, "peak": peak, "during": max(0.0, peak - before)})
    except Exception as exc:  # noqa: BLE001 - reported in the table
        q.put({"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def _export(model_dir: str, q: Any) -> None:
    try:
        from pipeline.models.onnx import export_onnx

        q.put({"ok": True, **export_onnx(model_dir)})
    except Exception as exc:  # noqa: BLE001 - reported
        q.put({"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def _in_process(ctx: Any, target: Any, *args: Any) -> dict[str, Any]:
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, q))
    proc.start()
    r = q.get()
    proc.join()
    return r


def _train_budget(model_dir: str) -> tuple[float, str]:
    """train.batch_seconds of the recipe that trained the model (else the recipe default), and where it came from."""
    import yaml

    from pipeline.config import TrainConfig

    path = Path(model_dir) / "recipe.yaml"
    if path.is_file():
        value = (yaml.safe_load(path.read_text()) or {}).get("train", {}).get("batch_seconds")
        if value is not None:
            return float(value), str(path)
    return float(TrainConfig().batch_seconds), "TrainConfig default"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a saved model directory of ours (config, weights, tokenizer, preprocessor)")
    ap.add_argument("--data", default="data/synth/test", help="data spec with transcripts (folder or manifest)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    ap.add_argument("--normalizer", default=None, help="WER normaliser (default: the model's, from speech_pipeline.json)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="transcribe the set this many times per process, keep the fastest")
    ap.add_argument("--rounds", type=int, default=3,
                    help="run every arm this many times, interleaved (a fresh process each time), keep each arm's fastest")
    ap.add_argument("--pipeline-batch", type=int, default=16, help="batch_size of the batched pipeline arm")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to time")
    ap.add_argument("--max-length-probe", action="store_true",
                    help="also time single long inputs up to the default batch budgets (peak memory)")
    ap.add_argument("--probe-seconds", nargs="+", type=float, default=[30.0, 60.0, 120.0, 240.0],
                    help="input lengths for the inference probe (the Transcriber's budget is always added)")
    a = ap.parse_args()
    from pipeline.evaluation.inference import default_batch_seconds

    opts = {"model": a.model, "data": a.data, "limit": a.limit, "normalizer": _normalizer(a.model, a.normalizer),
            "threads": a.threads, "repeat": a.repeat, "pipeline_batch": a.pipeline_batch}
    ctx = mp.get_context("spawn")
    from pipeline.models.onnx import EXPORT_INFO

    exported = None
    if any(arm.startswith("onnx") for arm in a.arms) and not (Path(a.model) / EXPORT_INFO).is_file():
        exported = _in_process(ctx, _export, a.model)
    load0 = os.getloadavg()
    # Rounds interleave the arms, so that a slow minute of a shared machine slows every arm alike
    # instead of one arm's whole measurement.
    results: dict[str, dict[str, Any]] = {}
    for _ in range(max(1, a.rounds)):
        for arm in (x for x in ARMS if x in a.arms):
            r = _in_process(ctx, _arm, arm, opts)
            best = results.get(arm)
            if best is None or (r["ok"] and (not best["ok"] or r["wall"] < best["wall"])):
                results[arm] = r
    probes: list[tuple[str, float, float, dict[str, Any]]] = []
    if a.max_length_probe:
        infer_budget = default_batch_seconds("cpu")
        train_budget, train_source = _train_budget(a.model)
        for seconds in sorted({*a.probe_seconds, infer_budget}):
            probes.append(("inference", seconds, infer_budget, _in_process(ctx, _probe, "inference", seconds, opts)))
        probes.append((f"training step ({train_source})", train_budget, train_budget,
                       _in_process(ctx, _probe, "training", train_budget, opts)))
    load1 = os.getloadavg()

    print()
    print(machine_line(a.threads, load0[0], load1[0]))
    print(f"command: {command_line()}")
    ok = {k: v for k, v in results.items() if v["ok"]}
    first = next(iter(ok.values()), None)
    if first is not None:
        print(f"model: {a.model}; data: {a.data}, {first['n']} utterances, {first['audio']:.1f} s of audio; "
              f"WER normaliser {opts['normalizer']}; fastest of {a.rounds} rounds x {a.repeat} runs, arms interleaved")
    print()
    print("| arm | batch | wall (s) | RTF (wall) | CPU (s) | RTF (CPU) | speed-up vs pipeline bs1 | speed-up vs pipeline "
          f"bs{a.pipeline_batch} | peak RSS (MB) | + during (MB) | WER |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = {k: ok[k]["wall"] / ok[k]["audio"] for k in ("pipeline-bs1", "pipeline-bs16") if k in ok}
    names = {"pipeline-bs1": "transformers.pipeline", "pipeline-bs16": "transformers.pipeline",
             "ours-bs1": "ours (Transcriber)", "ours-batched": "ours (Transcriber)",
             "onnx-bs1": "ours, ONNX Runtime", "onnx-batched": "ours, ONNX Runtime"}
    for arm, r in results.items():
        if not r["ok"]:
            print(f"| {names[arm]} | failed: {r['error']} | - | - | - | - | - | - | - | - | - |")
            continue
        rtf = r["wall"] / r["audio"]
        vs = [f"{base[k] / rtf:.2f}" if k in base else "-" for k in ("pipeline-bs1", "pipeline-bs16")]
        print(f"| {names[arm]} | {r['batch']} | {r['wall']:.2f} | {rtf:.4f} | {r['cpu']:.2f} | {r['cpu'] / r['audio']:.4f} | "
              f"{vs[0]} | {vs[1]} | {r['peak']:.0f} | {r['during']:.0f} | {100 * r['wer']:.2f} % |")
    print()

    def mismatches(x: str, y: str) -> str:
        if x not in ok or y not in ok:
            return "not run"
        n = sum(p != q for p, q in zip(ok[x]["hyps"], ok[y]["hyps"], strict=True))
        return f"{n} of {len(ok[x]['hyps'])} transcripts differ"

    print(f"check: ours batched vs ours one-at-a-time: {mismatches('ours-batched', 'ours-bs1')} (must be 0)")
    print(f"check: pipeline bs{a.pipeline_batch} vs pipeline bs1: {mismatches('pipeline-bs16', 'pipeline-bs1')}")
    print(f"check: ours one-at-a-time vs pipeline bs1: {mismatches('ours-bs1', 'pipeline-bs1')}")
    print(f"check: ONNX Runtime batched vs PyTorch batched: {mismatches('onnx-batched', 'ours-batched')}")
    print(f"check: ONNX Runtime batched vs one-at-a-time: {mismatches('onnx-batched', 'onnx-bs1')}")
    if exported is not None:
        print(f"exported {a.model}/model.onnx first: " + (f"largest logit difference {exported['check']['max_abs_diff']:.2g}"
                                                          if exported["ok"] else f"failed: {exported['error']}"))
    if probes:
        print()
        print("| max-length probe | input (s) | batch budget (s) | within budget | wall (s) | RTF (wall) | peak RSS (MB) "
              "| + during (MB) |")
        print("|---|---|---|---|---|---|---|---|")
        for kind, seconds, budget, r in probes:
            within = "yes" if seconds <= budget else "no (a batch of its own)"
            if not r["ok"]:
                print(f"| {kind} | {seconds:g} | {budget:g} | {within} | failed: {r['error']} | - | - | - |")
                continue
            print(f"| {kind} | {seconds:g} | {budget:g} | {within} | {r['wall']:.2f} | {r['wall'] / seconds:.4f} | "
                  f"{r['peak']:.0f} | {r['during']:.0f} |")
        print("(one utterance per run; a longer one still runs, alone, in a batch of its own: the budget bounds "
              "batching, not length; evaluate_model cuts audio over 20 s into chunks first)")
    print(load_note(load1[0], "wall-clock RTFs are pessimistic; RTF (CPU time) is closer to an idle machine's"))


if __name__ == "__main__":
    main()
