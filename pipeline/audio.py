"""Audio input without torchcodec or FFmpeg: soundfile to read, torchaudio's functional API to resample."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio

from pipeline.errors import DataError

AudioRef = str | dict[str, Any]  # a path, or a Hub row {"path": ..., "bytes": ...}


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    sample_rate: int
    channels: int


def describe(ref: AudioRef) -> str:
    if isinstance(ref, dict):
        return str(ref.get("path") or "<audio bytes>")
    return str(ref)


def _open_source(ref: AudioRef) -> Any:
    if isinstance(ref, dict):
        data = ref.get("bytes")
        if data:
            return io.BytesIO(data)
        path = ref.get("path")
        if not path:
            raise DataError("audio row has neither bytes nor a path")
        return path
    return ref


def _decode(ref: AudioRef, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Frames [start, stop) of a file, channels averaged: (float32 samples, rate). `DataError` names the file."""
    try:
        data, sr = sf.read(_open_source(ref), start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise DataError(f"{describe(ref)}: cannot read audio ({str(exc).strip().splitlines()[0]})") from None
    if data.shape[0] == 0:
        raise DataError(f"{describe(ref)}: audio has no samples" + (f" at frames {start}-{stop}" if start else ""))
    return (data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]), int(sr)


def read_audio(ref: AudioRef, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read any soundfile-supported file (wav, flac, ogg/opus, mp3) as mono float32.

    Channels are averaged; the signal is resampled to `sample_rate` when given. Raises
    `DataError` naming the file when it cannot be decoded or holds non-finite samples.
    """
    audio, sr = _decode(ref)
    if not np.isfinite(audio).all():
        raise DataError(f"{describe(ref)}: audio holds NaN or infinite samples")
    if sample_rate is not None and sr != sample_rate:
        audio = resample(audio, sr, sample_rate)
        sr = sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), int(sr)


def read_frames(ref: AudioRef, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of a file at its own rate, mono float32 (a window of a long noise recording)."""
    return np.ascontiguousarray(_decode(ref, start, stop)[0], dtype=np.float32)


def loud_span(audio: np.ndarray, db: float) -> tuple[int, int] | None:
    """[first, last + 1) samples louder than `db` below the peak; None for silence (or no samples)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0.0:
        return None
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (db / 20))
    return int(loud[0]), int(loud[-1]) + 1


def frame_rms(audio: np.ndarray, sample_rate: int, frame_seconds: float = 0.01) -> tuple[np.ndarray, int]:
    """RMS of consecutive `frame_seconds` frames (the last one zero-padded), and the frame size in samples."""
    size = max(1, int(round(frame_seconds * sample_rate)))
    count = -(-audio.size // size)
    padded = np.zeros(count * size, dtype=np.float64)
    padded[: audio.size] = audio
    return np.sqrt((padded.reshape(count, size) ** 2).mean(axis=1)), size


def speech_span(audio: np.ndarray, sample_rate: int, db: float,
                frames: tuple[np.ndarray, int] | None = None) -> tuple[int, int] | None:
    """[first, last) samples of the 10-ms frames whose RMS is within `db` (negative) of the loudest frame's.

    Frame energy, not single samples: one click does not stretch the span, and a fricative onset counts.
    `frames`: `frame_rms(audio, sample_rate)` when the caller already has it.
    """
    rms, size = frames if frames is not None else frame_rms(audio, sample_rate)
    span = loud_span(rms, db)
    return None if span is None else (span[0] * size, min(span[1] * size, audio.size))


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int) -> Any:
    """`torchaudio.transforms.Resample` keeps its sinc kernel: `functional.resample` builds it again on every call,
    about half the time of resampling a 0.5-s clip from 8 kHz."""
    return torchaudio.transforms.Resample(orig_sr, new_sr, dtype=torch.float32)  # as functional.resample on float32


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    if orig_sr == new_sr:
        return audio
    with torch.inference_mode():
        return _resampler(int(orig_sr), int(new_sr))(torch.from_numpy(np.ascontiguousarray(audio))).numpy()


def probe(ref: AudioRef, decode: bool = True) -> AudioInfo:
    """Measure an audio file; with `decode`, also read every sample so broken files fail here, once.

    Headers can lie (truncated files, wrong frame counts): decoding the file once while the data set
    is prepared means a file that passes never fails later in the middle of a training run.
    """
    if decode:
        try:
            data, sr = sf.read(_open_source(ref), dtype="float32", always_2d=True)
        except Exception as exc:
            raise DataError(f"cannot read audio ({str(exc).strip().splitlines()[0]})") from None
        if data.shape[0] == 0:
            raise DataError("audio has no samples")
        if not np.isfinite(data).all():
            raise DataError("audio holds NaN or infinite samples")
        return AudioInfo(duration=data.shape[0] / sr, sample_rate=int(sr), channels=int(data.shape[1]))
    try:
        info = sf.info(_open_source(ref))
    except Exception as exc:
        raise DataError(f"cannot read audio header ({str(exc).strip().splitlines()[0]})") from None
    if info.frames <= 0:
        raise DataError("audio has no samples")
    return AudioInfo(duration=info.frames / info.samplerate, sample_rate=int(info.samplerate), channels=int(info.channels))


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """Write a 16-bit WAV atomically (temporary name, then rename)."""
    import os

    tmp = f"{path}.tmp-{os.getpid()}"
    sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
