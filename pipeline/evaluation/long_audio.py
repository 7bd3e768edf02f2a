"""Long audio: chunked inference with overlapping strides, logits stitched, then decoded once.

A file longer than `chunk_seconds` is cut into windows of `chunk_seconds` that overlap by
`stride_seconds` on each side (as `transformers.pipeline(chunk_length_s=..., stride_length_s=...)`
does). Each window is run through the model on its own; from each window only the frames between
two fixed boundaries are kept (the boundary between windows i-1 and i lies `stride_seconds` into
window i and `stride_seconds` before the end of window i-1), so every kept frame saw at least a
stride of context on both sides, and the overlapping logits are dropped. Window starts are
multiples of the model's samples-per-output-frame, so kept frames sit exactly where the
unchunked model puts them: for a model whose receptive field is shorter than the stride, the
stitched logits equal the unchunked ones. The stitched logits are decoded once (greedy or beam
search), so a word cut by a window edge is not duplicated or lost.

Memory stays bounded by the window length (and the batch of windows), whatever the file length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from pipeline.evaluation.inference import Transcriber, samples_per_frame
from pipeline.evaluation.timestamps import Timed, settle

DEFAULT_CHUNK_SECONDS = 20.0
T = TypeVar("T")


def chunk_starts(n_samples: int, chunk: int, stride_left: int, stride_right: int) -> list[int]:
    """Window start offsets: windows of `chunk` samples, consecutive ones overlapping by both strides.

    The last window is the first one that reaches the end, so it is always longer than the strides.
    """
    step = chunk - stride_left - stride_right
    if step <= 0:
        raise ValueError(f"chunk ({chunk} samples) must be longer than both strides ({stride_left}+{stride_right})")
    starts = [0]
    while starts[-1] + chunk < n_samples:
        starts.append(starts[-1] + step)
    return starts


def forward_logits(transcriber: Transcriber, audios: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Logits (valid frames x vocab, float32, CPU) of each audio, batched exactly as the transcriber does."""
    logits, mask = transcriber.forward(audios)
    return [row[: int(m.sum())].cpu() for row, m in zip(logits, mask, strict=True)]


def chunked_logits(transcriber: Transcriber, audio: np.ndarray, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                   stride_seconds: float | None = None) -> torch.Tensor:
    """Stitched (frames x vocab) logits of one long audio; see the module docstring."""
    sr = int(transcriber.feature_extractor.sampling_rate)
    if stride_seconds is None:
        stride_seconds = chunk_seconds / 6
    align = samples_per_frame(transcriber.model, transcriber.feature_extractor) or 1
    chunk = max(align, int(round(chunk_seconds * sr / align)) * align)
    stride = int(round(stride_seconds * sr / align)) * align
    starts = chunk_starts(len(audio), chunk, stride, stride)
    if len(starts) == 1:
        return forward_logits(transcriber, [audio])[0]
    windows = [audio[s:s + chunk] for s in starts]
    per_batch = max(1, min(transcriber.max_batch_size, int(transcriber.batch_seconds // max(chunk_seconds, 1e-9))))
    outs: list[torch.Tensor] = []
    for b in range(0, len(windows), per_batch):
        outs.extend(forward_logits(transcriber, windows[b:b + per_batch]))
    if align == 1:  # frame rate unknown: estimate it from a full window
        ratio = chunk / max(outs[0].shape[0], 1)
        to_frame = lambda samples: int(round(samples / ratio))  # noqa: E731
    else:
        to_frame = lambda samples: samples // align  # noqa: E731
    # boundaries[i] = first global frame kept from window i
    boundaries = [0] + [to_frame(s + stride) for s in starts[1:]]
    pieces = []
    for i, (s, logits) in enumerate(zip(starts, outs, strict=True)):
        first = boundaries[i] - to_frame(s)
        last = boundaries[i + 1] - to_frame(s) if i + 1 < len(starts) else logits.shape[0]
        pieces.append(logits[max(first, 0):min(last, logits.shape[0])])
    return torch.cat(pieces, dim=0)


class LongAudioTranscriber:
    """Wraps a `Transcriber` (greedy or beam): audio longer than `chunk_seconds` is chunked.

    Shorter audio goes through the wrapped transcriber unchanged (same batching, same text).
    """

    def __init__(self, base: Transcriber, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                 stride_seconds: float | None = None) -> None:
        if chunk_seconds <= 0:
            raise ValueError("chunk_seconds must be positive")
        self.base = base
        self.chunk_seconds = float(chunk_seconds)
        self.stride_seconds = stride_seconds
        self.feature_extractor = base.feature_extractor
        self.tokenizer = base.tokenizer
        self.model = base.model

    def is_long(self, audio: np.ndarray) -> bool:
        return len(audio) > self.chunk_seconds * self.feature_extractor.sampling_rate

    def long_logits(self, audio: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Stitched logits of one long audio as a batch of one, and its mask (every frame is audio)."""
        logits = chunked_logits(self.base, audio, self.chunk_seconds, self.stride_seconds)
        return logits[None], torch.ones(1, logits.shape[0], dtype=torch.bool)

    def transcribe(self, audios: Sequence[np.ndarray], progress: bool = False) -> list[str]:
        return self._each(audios, self.base.transcribe, self.base.logits_to_text, progress)

    def transcribe_words(self, audios: Sequence[np.ndarray], progress: bool = False, on_speech: bool = True
                         ) -> list[Timed]:
        """Transcripts with word timestamps (`Transcriber.transcribe_words`); those of a long file count from its start."""
        sr, frame = self.feature_extractor.sampling_rate, self.base.frame_seconds()
        results = self._each(audios, lambda x, progress: self.base.transcribe_words(x, progress, on_speech=False),
                             self.base.logits_to_words, progress)
        return [settle(r, a, sr, frame) for r, a in zip(results, audios, strict=True)] if on_speech else results

    def _each(self, audios: Sequence[np.ndarray], short_many: Callable[..., list[T]],
              decode: Callable[[torch.Tensor, torch.Tensor], list[T]], progress: bool) -> list[T]:
        """Short audio through `short_many` (the wrapped transcriber's batching), long audio decoded one by one."""
        out: list[Any] = [None] * len(audios)
        short = [i for i, a in enumerate(audios) if not self.is_long(a)]
        if short:
            for i, result in zip(short, short_many([audios[i] for i in short], progress=progress), strict=True):
                out[i] = result
        for i, a in enumerate(audios):
            if self.is_long(a):
                out[i] = decode(*self.long_logits(a))[0]
        return out


def make_transcriber(base: Transcriber, chunk_seconds: float | None, stride_seconds: float | None = None) -> Any:
    """`base` itself when chunking is off (None or 0), else a `LongAudioTranscriber` around it."""
    if not chunk_seconds:
        return base
    return LongAudioTranscriber(base, chunk_seconds, stride_seconds)
