"""Copy-synthesis evaluation of a vocoder on a data spec, next to the Griffin-Lim floor.

For every utterance: audio (resampled to the vocoder's rate, optionally cut) -> the vocoder's log-mel ->
waveform with the chosen sampler and steps, and -> Griffin-Lim (32 iterations) from the same mel.
Both are scored against the audio (`pipeline.tts.metrics`). Writes OUT/metrics.json (means) and
OUT/utterances.jsonl (per utterance), and the first `write_audio` outputs as wavs under OUT/audio/.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.audio import read_audio, write_wav
from pipeline.config import DataSpec
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.io import write_json, write_jsonl
from pipeline.tts.inference import Vocoder
from pipeline.tts.metrics import GriffinLim, all_metrics, mean_metrics, real_time_factor

logger = logging.getLogger(__name__)


def evaluate_vocoder(model_dir: str | Path, spec: DataSpec, output: str | Path, *, steps: int | None = None,
                     sampler: str | None = None, limit: int | None = None, max_seconds: float | None = None,
                     write_audio: int = 0, seed: int = 0, griffin_lim: bool = True, progress: bool = True) -> dict[str, Any]:
    from pipeline.evaluation.evaluate import default_cache_dir

    vocoder = Vocoder.from_pretrained(model_dir)
    sampler = sampler or vocoder.settings.sampler
    steps = int(steps or vocoder.settings.steps)
    sr = vocoder.sample_rate
    report = SkipReport()
    table = prepare_split(load_spec(spec, need_text=False), "eval", describe_spec(spec), report, normalize=lambda t: t,
                          min_duration=0.0, max_duration=3600.0, need_text=False, on_bad_rows="skip",
                          cache_dir=default_cache_dir())
    if limit is not None and limit < len(table):
        table = table.select(np.linspace(0, len(table) - 1, limit).round().astype(int).tolist())
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    gl = GriffinLim(vocoder.front_end)
    rows, synth_seconds, audio_seconds = [], 0.0, 0.0
    from tqdm.auto import tqdm

    for i in tqdm(range(len(table)), desc="vocoding", unit="utt", disable=not progress):
        ref = read_audio(table[i]["audio"], sr)[0]
        if max_seconds:
            ref = ref[: int(max_seconds * sr)]
        mel = vocoder.mel(ref)
        t0 = time.perf_counter()
        wave = vocoder(mel, sampler=sampler, steps=steps, seed=seed + i)[: len(ref)]
        elapsed = time.perf_counter() - t0
        synth_seconds += elapsed
        audio_seconds += len(ref) / sr
        row: dict[str, Any] = {"index": i, "audio": str(table[i]["audio"]) if isinstance(table[i]["audio"], str) else i,
                               "seconds": len(ref) / sr, "rtf": real_time_factor(elapsed, len(ref) / sr),
                               **all_metrics(ref, wave, sr, vocoder.front_end)}
        gl_wave = None
        if griffin_lim:
            gl_wave = gl(mel, len(ref), seed=seed + i)
            row.update({f"gl_{k}": v for k, v in all_metrics(ref, gl_wave, sr, vocoder.front_end).items()})
        rows.append(row)
        if i < write_audio:
            (out / "audio").mkdir(exist_ok=True)
            write_wav(str(out / "audio" / f"{i:05d}_generated.wav"), wave.numpy(), sr)
            write_wav(str(out / "audio" / f"{i:05d}_reference.wav"), ref, sr)
            if gl_wave is not None:
                write_wav(str(out / "audio" / f"{i:05d}_griffin_lim.wav"), gl_wave.numpy(), sr)
    keys = ("log_mel_l1", "mr_stft", "pesq", "stoi")
    means = mean_metrics([{k: r.get(k) for k in keys} for r in rows])
    metrics: dict[str, Any] = {
        "model": str(model_dir), "data": describe_spec(spec), "num_utterances": len(rows), "audio_seconds": round(audio_seconds, 3),
        "sample_rate": sr, "mel_preset": vocoder.mel_config.name, "sampler": sampler, "steps": steps,
        "vocoder": {**means, "rtf": real_time_factor(synth_seconds, audio_seconds)},
        "griffin_lim": mean_metrics([{k: r.get(f"gl_{k}") for k in keys} for r in rows]) if griffin_lim else None,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "device": str(next(vocoder.model.parameters()).device)},
        "skipped": report.summary(),
    }
    write_json(out / "metrics.json", metrics)
    write_jsonl(out / "utterances.jsonl", rows)
    return metrics
