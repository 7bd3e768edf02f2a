"""Round-trip intelligibility of text-to-speech: synthesise sentences, transcribe them, score the transcripts.

This is how TTS papers judge intelligibility without listeners: an ASR model of this project reads
what the TTS said. The same ASR model also transcribes the *original recordings* of the same
sentences (when the data spec has audio), so the round-trip WER is read against the ASR model's own
error rate on real speech: the gap is what synthesis costs. Where references exist, the log-mel
distance between synthesis and recording is reported after dynamic time warping (the two differ in
timing by construction). A Griffin-Lim rendering of the same predicted mels separates the acoustic
model's errors from the vocoder's.

Writes OUT/metrics.json, OUT/utterances.jsonl and the first `write_audio` syntheses under OUT/audio/.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.audio import read_audio, resample, write_wav
from pipeline.config import DataSpec
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.data.text import get_normalizer
from pipeline.errors import DataError
from pipeline.io import write_json, write_jsonl

logger = logging.getLogger(__name__)


def dtw_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame L1 distance of two (frames, bins) sequences along their best monotonic alignment.

    Vectorised for long utterances: the cost matrix is built in row blocks (bounded memory) and the
    recursion sweeps anti-diagonals, whose cells depend only on the two previous diagonals. The
    result, ties included (diagonal, then up, then left), is that of the plain double loop.
    """
    n, m = len(a), len(b)
    rows = max(1, (1 << 22) // max(1, m * a.shape[-1]))  # about 4M differences in memory at a time
    cost = np.concatenate([np.abs(a[s:s + rows, None, :] - b[None, :, :]).mean(-1)
                           for s in range(0, max(n, 1), rows)])
    if np.isnan(cost).any():
        return float("nan")  # a NaN cost reaches the last cell along every path in the loop version
    # Flat (n + 1, m + 1) tables: an anti-diagonal i + j = d is a slice with stride m.
    w = m + 1
    padded = np.zeros((n + 1) * w, dtype=cost.dtype)
    padded.reshape(n + 1, w)[1:, 1:] = cost
    acc = np.full((n + 1) * w, np.inf)
    acc[0] = 0.0
    steps = np.zeros((n + 1) * w, dtype=np.int64)
    for d in range(2, n + m + 1):
        lo, hi = max(1, d - m), min(n, d - 1)
        start, stop = lo * m + d, hi * m + d + 1
        here = slice(start, stop, m)
        diag, up, left = (slice(start - s, stop - s, m) for s in (w + 1, w, 1))
        best, best_steps = acc[diag], steps[diag]
        take = acc[up] < best
        best, best_steps = np.where(take, acc[up], best), np.where(take, steps[up], best_steps)
        take = acc[left] < best
        best, best_steps = np.where(take, acc[left], best), np.where(take, steps[left], best_steps)
        acc[here] = padded[here] + best
        steps[here] = best_steps + 1
    return float(acc[n * w + m] / steps[n * w + m])


def _sentences(spec: DataSpec | None, text_file: str | None, limit: int | None) -> tuple[list[str], list[Any], str]:
    """(texts, audio refs or Nones, description) from a data spec with transcripts, or a text file."""
    if text_file is not None:
        path = Path(text_file)
        try:
            lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the text file ({exc})") from None
        texts = [x for x in lines if x]
        if not texts:
            raise DataError(f"{path}: no sentences")
        texts = texts[:limit] if limit else texts
        return texts, [None] * len(texts), str(path)
    assert spec is not None
    from pipeline.evaluation.evaluate import default_cache_dir

    table = prepare_split(load_spec(spec), "eval", describe_spec(spec), SkipReport(), normalize=lambda t: t,
                          min_duration=0.0, max_duration=3600.0, need_text=True, on_bad_rows="skip",
                          cache_dir=default_cache_dir())
    if limit is not None and limit < len(table):
        table = table.select(np.linspace(0, len(table) - 1, limit).round().astype(int).tolist())
    return list(table["text"]), list(table["audio"]), describe_spec(spec)


def evaluate_tts(acoustic_dir: str | Path, vocoder_dir: str | Path | None, asr_dir: str | Path, output: str | Path, *,
                 data: DataSpec | None = None, text_file: str | None = None, limit: int | None = None,
                 steps: int | None = None, sampler: str | None = None, speaking_rate: float = 1.0,
                 griffin_lim: bool = True, write_audio: int = 5, seed: int = 0, progress: bool = True,
                 speaker: str | None = None) -> dict[str, Any]:
    """Round-trip WER/CER of the TTS (and of Griffin-Lim on the same mels), next to the ASR's WER on the recordings."""
    from pipeline.evaluation.evaluate import load_model_dir
    from pipeline.evaluation.inference import Transcriber
    from pipeline.evaluation.metrics import error_rates
    from pipeline.tts.acoustic import AcousticModel, TextToSpeech
    from pipeline.tts.inference import Vocoder
    from pipeline.tts.mel import MelFrontEnd
    from pipeline.tts.metrics import GriffinLim

    if (data is None) == (text_file is None):
        raise DataError("round-trip evaluation: give exactly one of a data spec (--data) or a text file (--text-file)")
    acoustic = AcousticModel.from_pretrained(acoustic_dir)
    acoustic.speaker_id(speaker)  # an unknown name fails here, before anything is synthesised
    tts = TextToSpeech(acoustic, Vocoder.from_pretrained(vocoder_dir), (str(acoustic_dir), str(vocoder_dir))) if vocoder_dir else None
    front_end = MelFrontEnd(acoustic.mel_config)
    sr = acoustic.mel_config.sample_rate
    gl = GriffinLim(front_end) if griffin_lim else None
    model, fe, tok, meta = load_model_dir(str(asr_dir), device="cpu")
    transcriber = Transcriber(model, fe, tok)
    normalize = get_normalizer(meta.get("normalizer", "default"))
    asr_sr = int(fe.sampling_rate)

    texts, refs, described = _sentences(data, text_file, limit)
    out = Path(output)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    arms: dict[str, list[np.ndarray]] = {"tts": [], "griffin_lim": [], "recording": []}
    mel_dist: list[float | None] = []
    synth_seconds = audio_seconds = 0.0
    from tqdm.auto import tqdm

    for i, text in enumerate(tqdm(texts, desc="synthesising", unit="utt", disable=not progress)):
        mel = acoustic.mel(text, speaking_rate=speaking_rate, speaker=speaker)
        if tts is not None:
            t0 = time.perf_counter()
            wave = tts.vocoder(mel, mel_config=acoustic.mel_config, sampler=sampler, steps=steps, seed=seed + i).numpy()
            synth_seconds += time.perf_counter() - t0
            audio_seconds += len(wave) / sr
            arms["tts"].append(resample(wave.astype(np.float32), sr, asr_sr))
            if i < write_audio:
                write_wav(str(out / "audio" / f"{i:04d}_tts.wav"), wave, sr)
        if gl is not None:
            g = gl(mel, seed=seed + i).numpy()
            arms["griffin_lim"].append(resample(g.astype(np.float32), sr, asr_sr))
            if i < write_audio:
                write_wav(str(out / "audio" / f"{i:04d}_griffin_lim.wav"), g, sr)
        dist = None
        if refs[i] is not None:
            recording = read_audio(refs[i], sr)[0]
            arms["recording"].append(resample(recording, sr, asr_sr))
            with torch.no_grad():
                ref_mel = front_end(torch.from_numpy(recording)).numpy()
            dist = dtw_l1(mel.numpy().T, ref_mel.T)
        mel_dist.append(dist)

    references = [normalize(t) for t in texts]
    rows = [{"text": t, "reference": r} for t, r in zip(texts, references, strict=True)]
    metrics: dict[str, Any] = {"sentences": len(texts), "data": described, "acoustic": str(acoustic_dir),
                               "vocoder": str(vocoder_dir) if vocoder_dir else None, "asr": str(asr_dir),
                               "speaking_rate": speaking_rate, "mel_preset": acoustic.mel_config.name,
                               "speaker": speaker if speaker is not None else acoustic.default_speaker}
    for arm, audios in arms.items():
        if not audios:
            continue
        hyps = [normalize(h) for h in transcriber.transcribe(audios)]
        rates = error_rates(references, hyps)
        metrics[arm] = {"wer": rates["wer"], "cer": rates["cer"]}
        for row, h in zip(rows, hyps, strict=True):
            row[f"{arm}_hypothesis"] = h
    if tts is not None:
        metrics["tts"]["vocoder_rtf"] = synth_seconds / max(audio_seconds, 1e-9)
    if "recording" in metrics:
        for arm in ("tts", "griffin_lim"):
            if arm in metrics:
                metrics[arm]["wer_gap_vs_recordings"] = metrics[arm]["wer"] - metrics["recording"]["wer"]
        dists = [d for d in mel_dist if d is not None]
        metrics["log_mel_l1_dtw"] = float(np.mean(dists)) if dists else None
    for row, d in zip(rows, mel_dist, strict=True):
        row["log_mel_l1_dtw"] = d
    write_jsonl(out / "utterances.jsonl", rows)
    write_json(out / "metrics.json", metrics)
    return metrics
