"""Word timestamps from CTC output frames: where each word of a transcript starts and ends, in seconds.

A CTC model labels every output frame with a token or blank. A token's span is its run of frames
(repeats merge; a blank between two equal tokens separates them); a word's span runs from its first
token's first frame to its last token's last frame, blanks around it excluded. Words are separated by
the character vocabulary's delimiter ("|") or, in a SentencePiece vocabulary, start at a piece that
begins with "▁". The same rule as `Wav2Vec2CTCTokenizer.decode(..., output_word_offsets=True)`, which
only character vocabularies have; this one serves every tokenizer and any frame path (the greedy one,
or a forced alignment of a chosen transcript).

A word's confidence is the product over its tokens of each token's highest probability within its run
of frames: the model's probability that every token of the word is right, if they were independent. On
the quickstart model's held-out voices it is calibrated (words at ~0.4 were right 36% of the time, at
~0.6 56%, at ~0.85 86%) and tells right from wrong words with an AUROC of 0.83 (benchmarks/timestamps.py).

Frames become seconds at the model's fixed frame rate (`samples_per_frame`): the same conversion as
`transformers.pipeline(..., return_timestamps="word")`, which has no frame rate for Parakeet and so
reports its words in the first few milliseconds of the audio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import torch

from pipeline.errors import ModelError

SPIECE_WORD_START = "\u2581"  # "▁"


class Word(TypedDict, total=False):
    word: str
    start: float  # seconds from the start of the audio
    end: float
    confidence: float  # the probability that the word is right, as the model sees it (see the module docstring)


class Timed(TypedDict):
    text: str
    words: list[Word]


def token_runs(path: Sequence[int], blank: int) -> list[tuple[int, int, int]]:
    """(token, first frame, one past its last frame) of each non-blank run of a frame path
    (`torchaudio.functional.merge_tokens`)."""
    import torchaudio.functional as AF

    spans = AF.merge_tokens(torch.as_tensor(list(path), dtype=torch.long), torch.zeros(len(path)), blank=blank)
    return [(int(x.token), int(x.start), int(x.end)) for x in spans]


Run = tuple[int, int, int]


def group_words(runs: Sequence[Run], delimiter: int | None, starts_word: Any = None) -> list[list[Run]]:
    """Token runs grouped into words: a `delimiter` run ends a word (and is dropped), and a run for which
    `starts_word(token)` holds begins one (SentencePiece's "▁" pieces)."""
    groups: list[list[Run]] = []
    current: list[Run] = []
    for run in runs:
        if run[0] == delimiter:
            current = []
            continue
        if not current or (starts_word is not None and starts_word(run[0])):
            current = [run]
            groups.append(current)
        else:
            current.append(run)
    return groups


FrameWord = tuple[str, int, int, float | None]  # word, first frame, one past its last frame, confidence


def path_words(path: Sequence[int], tokenizer: Any, blank: int, log_probs: torch.Tensor | None = None
               ) -> list[FrameWord]:
    """Each word a CTC frame path spells, with its frame span and, given the (frames, vocab) `log_probs`,
    its confidence (`peak_confidence`)."""
    delimiter = getattr(tokenizer, "word_delimiter_token_id", None)
    groups = group_words(token_runs(path, blank), delimiter,
                         lambda token: tokenizer.convert_ids_to_tokens(token).startswith(SPIECE_WORD_START))
    out = []
    for group in groups:
        word = tokenizer.decode([t for t, _, _ in group], group_tokens=False).strip()
        if word:
            confidence = peak_confidence(group, log_probs) if log_probs is not None else None
            out.append((word, group[0][1], group[-1][2], confidence))
    return out


def peak_confidence(runs: Sequence[tuple[int, int, int]], log_probs: torch.Tensor) -> float:
    """The product over token runs of each token's highest probability within its run."""
    return math.exp(sum(float(log_probs[s:e, t].max()) for t, s, e in runs))


def aligned_confidence(log_probs: torch.Tensor, ids: Sequence[int], blank: int) -> float | None:
    """`peak_confidence` of a word spelled `ids`, along its most probable alignment to `log_probs` (the
    word's frames); None when the frames are too few for it."""
    import torchaudio.functional as AF

    if not ids or log_probs.shape[0] == 0:
        return None
    try:
        path, _ = AF.forced_align(log_probs[None].float(), torch.tensor([list(ids)], dtype=torch.int32), blank=blank)
    except RuntimeError:  # more targets (and repeats) than frames
        return None
    return peak_confidence(token_runs(path[0].tolist(), blank), log_probs)


def seconds_per_frame(samples_per_frame: int | None, sampling_rate: int) -> float:
    """Seconds per CTC output frame; a model without a fixed frame rate is a one-line error."""
    if not samples_per_frame:
        raise ModelError("word timestamps need a model with a fixed output frame rate "
                         "(config.inputs_to_logits_ratio, or Parakeet's subsampling and hop); this one has none")
    return samples_per_frame / sampling_rate


def timed(text: str, words: Sequence[FrameWord], frame_seconds: float) -> Timed:
    """A transcript with its words' spans converted from frames to seconds (millisecond precision)."""
    out: list[Word] = []
    for w, s, e, confidence in words:
        word: Word = {"word": w, "start": round(s * frame_seconds, 3), "end": round(e * frame_seconds, 3)}
        if confidence is not None:
            word["confidence"] = round(confidence, 3)
        out.append(word)
    return {"text": text, "words": out}


SPEECH_DB = -40.0  # speech is where the signal is within this many dB of its peak


def speech_bounds(audio: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) samples within SPEECH_DB of the peak (the whole signal for silence)."""
    from pipeline.audio import loud_span

    return loud_span(audio, SPEECH_DB) or (0, len(audio))


def settle(result: Timed, audio: np.ndarray, sampling_rate: int, min_seconds: float = 0.0) -> Timed:
    """Word times moved onto the speech: less the model's emission lag, within the signal's loud span.

    A CTC model with global attention may emit its labels a few frames late (the quickstart Conformer:
    ~3 frames) or, when the labels are dense, spread them over the silence before the first word. The lag
    is measured on the utterance itself, as `pipeline.tts.alignment` does: how far the last word ends after
    the signal's energy does. Every time is moved back by it and kept within the loud span, in order; a word
    whose start the span moved keeps at least `min_seconds` (one output frame) where the next word allows.
    """
    words = result["words"]
    if not words:
        return result
    first, last = speech_bounds(audio)
    lo, hi = first / sampling_rate, last / sampling_rate
    lag = max(0.0, words[-1]["end"] - hi)
    starts: list[float] = []
    for w in words:
        starts.append(min(max(w["start"] - lag, starts[-1] if starts else lo), hi))
    out: list[Word] = []
    for i, (w, start) in enumerate(zip(words, starts, strict=True)):
        limit = min(starts[i + 1], hi) if i + 1 < len(words) else hi
        end = min(max(w["end"] - lag, start + min_seconds), max(limit, start))
        out.append({**w, "start": round(start, 3), "end": round(end, 3)})
    return {"text": result["text"], "words": out}
