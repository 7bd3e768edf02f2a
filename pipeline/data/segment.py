"""Long recordings with their transcripts -> training utterances, by CTC forced alignment.

People often have an hour of audio and its transcript, not a folder of short labelled clips. A CTC model
of this toolkit (or a Hub checkpoint) scores the whole recording in overlapping windows
(`long_audio.chunked_logits`, memory bounded by the window), `torchaudio.functional.forced_align` places
every word of the transcript (normalised as the model was trained), and the words are cut into segments of
at most `max_seconds` at the widest pauses between them: a span longer than that is split at its widest gap,
and each half again, until every segment fits. Each segment's audio is cut from the original file (its own
sample rate, channels averaged) with up to `pad` seconds of the surrounding pause, and it is written as an audiofolder
(`metadata.csv`: file_name, text, speaker, source, start, end, confidence) that `data.train` reads as it is.

A segment's confidence is the lowest mean, over any 5 consecutive words of it, of the forced alignment's word
confidence (each token's peak probability within its frames, multiplied: `timestamps.peak_confidence`). Where
the transcript does not say what the audio says (a missing sentence, another take), the model gives the forced
words there almost no probability, and `min_confidence` drops those segments, listed in the report. On the demo
model, segments holding a replaced sentence scored at most 0.001 and 48 of 49 correct ones 0.005 or more; the
mean over a segment's words separated them far less (AUROC 0.68 against 0.99).

The same approach as NeMo's and ESPnet's CTC segmentation tools; this one reuses the toolkit's chunking,
forced alignment and word timing (`pipeline.evaluation.timestamps`), so word times are those of
`transcribe.py --timestamps` for the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import DataError, ModelError
from pipeline.evaluation.timestamps import Word, path_words, settle, timed

DEFAULT_MAX_SECONDS = 15.0
DEFAULT_PAD = 0.15
# A segment's confidence is its weakest run of this many words: a wrong stretch of transcript shows there,
# where a mean over a long segment's words would dilute it (benchmarks/segment.py)
WINDOW = 5
# torchaudio's forced alignment keeps a byte per trellis cell (frames x (2 x tokens + 1)): measured 0.9 GB for 17
# minutes of speech at 32 ms frames, so about 30 minutes fit in this
MAX_CELLS = 3e9


@dataclass
class Segment:
    start: float  # seconds in the source recording
    end: float
    text: str
    confidence: float


def transcript_ids(tokenizer: Any, text: str, where: str) -> list[int]:
    """Token ids of a (normalised) transcript; characters the vocabulary cannot spell are a one-line error."""
    ids = list(tokenizer(text).input_ids)
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in ids:
        vocab = tokenizer.get_vocab()
        missing = sorted({c for c in text if c != " " and c not in vocab})
        raise DataError(f"{where}: the model's vocabulary cannot spell the transcript"
                        + (f" (characters {''.join(missing)!r})" if missing else ""))
    if not ids:
        raise DataError(f"{where}: empty transcript")
    return ids


def align_words(transcriber: Any, audio: np.ndarray, text: str, where: str, chunk_seconds: float = 20.0,
                max_cells: float = MAX_CELLS) -> list[Word]:
    """The words of `text` placed in `audio` (at the transcriber's sampling rate): start, end (seconds) and
    confidence from the forced alignment, corrected for the model's emission lag (`timestamps.settle`).
    A recording whose alignment trellis (output frames x (2 x tokens + 1)) exceeds `max_cells` is refused."""
    import torchaudio.functional as AF

    from pipeline.evaluation.long_audio import chunked_logits

    ids = transcript_ids(transcriber.tokenizer, text, where)
    with torch.inference_mode():
        logits = chunked_logits(transcriber, audio, chunk_seconds)
    log_probs = logits.float().log_softmax(-1)
    repeats = sum(a == b for a, b in zip(ids, ids[1:], strict=False))
    if len(ids) + repeats > log_probs.shape[0]:
        raise DataError(f"{where}: the transcript ({len(ids)} tokens) is too long for the audio "
                        f"({log_probs.shape[0]} output frames): is it this recording's?")
    cells = log_probs.shape[0] * (2 * len(ids) + 1)
    if cells > max_cells:
        raise DataError(f"{where}: {len(audio) / transcriber.feature_extractor.sampling_rate / 60:.0f} minutes with a "
                        f"{len(ids)}-token transcript need a {cells / 1e9:.1f} GB alignment (over {max_cells / 1e9:g}): "
                        f"cut the recording and its transcript into parts of about 30 minutes")
    path, _ = AF.forced_align(log_probs[None], torch.tensor([ids], dtype=torch.int32), blank=transcriber.blank)
    frame = transcriber.frame_seconds()
    words = timed(text, path_words(path[0].tolist(), transcriber.tokenizer, transcriber.blank, log_probs), frame)
    sr = int(transcriber.feature_extractor.sampling_rate)
    return settle(words, audio, sr, frame)["words"]


def split_words(words: Sequence[Word], max_seconds: float) -> list[list[Word]]:
    """Consecutive groups of words, each spanning at most `max_seconds` (a longer single word stands alone),
    cut at the widest pause: a group too long is split at its widest gap between words, recursively."""
    if not words:
        return []
    if words[-1]["end"] - words[0]["start"] <= max_seconds or len(words) == 1:
        return [list(words)]
    gaps = [words[i + 1]["start"] - words[i]["end"] for i in range(len(words) - 1)]
    cut = max(range(len(gaps)), key=lambda i: (gaps[i], -abs(2 * i + 1 - len(gaps))))  # widest; central on ties
    return split_words(words[: cut + 1], max_seconds) + split_words(words[cut + 1:], max_seconds)


def segments(words: Sequence[Word], duration: float, max_seconds: float = DEFAULT_MAX_SECONDS,
             pad: float = DEFAULT_PAD) -> list[Segment]:
    """`split_words` groups as segments of the recording: each extended by up to `pad` seconds into the pauses
    around it (never past the middle of a pause, so neighbours do not overlap) and within [0, duration]."""
    groups = split_words(words, max_seconds)
    out = []
    for k, group in enumerate(groups):
        before = groups[k - 1][-1]["end"] if k else 0.0
        after = groups[k + 1][0]["start"] if k + 1 < len(groups) else duration
        start, end = group[0]["start"], group[-1]["end"]
        start = max(start - pad, (before + start) / 2 if k else 0.0)
        end = min(end + pad, (end + after) / 2 if k + 1 < len(groups) else duration)
        out.append(Segment(round(start, 3), round(end, 3), " ".join(w["word"] for w in group),
                           round(weakest_run(group), 4)))
    return out


def weakest_run(words: Sequence[Word], window: int = WINDOW) -> float:
    """The lowest mean word confidence over `window` consecutive words (all of them in a shorter segment)."""
    c = np.array([w.get("confidence", 0.0) for w in words], dtype=np.float64)
    if c.size == 0:
        return 0.0
    k = min(window, c.size)
    sums = np.convolve(c, np.ones(k), mode="valid")
    return float(sums.min() / k)


def segment_recordings(model_dir: str, recordings: Sequence[tuple[str, str]], output: str | Path,
                       max_seconds: float = DEFAULT_MAX_SECONDS, pad: float = DEFAULT_PAD, min_confidence: float = 0.0,
                       speaker: str | None = None, normalizer: str | None = None, runtime: str = "torch",
                       progress: bool = True) -> dict[str, Any]:
    """Cut each (audio file, transcript file) pair into segments under `output` (an audiofolder) and return the
    report also written to `output/segment_report.json`. A recording that cannot be aligned is skipped with its
    reason; segments under `min_confidence` are dropped and listed."""
    from pipeline.audio import read_audio, resample, write_wav
    from pipeline.data.text import get_normalizer
    from pipeline.evaluation.evaluate import load_model_dir
    from pipeline.evaluation.inference import Transcriber
    from pipeline.io import write_csv, write_json

    if max_seconds <= 0 or pad < 0 or not 0 <= min_confidence <= 1:
        raise ModelError("segmenting needs max_seconds > 0, pad >= 0 and min_confidence in [0, 1]")
    model, fe, tok, meta = load_model_dir(model_dir, runtime=runtime)
    normalize = get_normalizer(normalizer or meta.get("normalizer", "default"))
    transcriber = Transcriber(model, fe, tok)
    transcriber.frame_seconds()  # a model without a fixed frame rate cannot place words: say so before any work
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"model": str(model_dir), "max_seconds": max_seconds, "pad": pad,
                              "min_confidence": min_confidence, "recordings": [], "skipped": [], "dropped": []}
    items = recordings
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(recordings, desc="segmenting", unit="recording")
    for audio_path, text_path in items:
        stem = Path(audio_path).stem
        try:
            text = normalize(Path(text_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            report["skipped"].append({"audio": audio_path, "reason": f"transcript {text_path}: {exc}"})
            continue
        try:
            original, original_sr = read_audio(audio_path)  # decoded once: clips come from it, the model hears it resampled
            sr = int(fe.sampling_rate)
            audio = resample(original, original_sr, sr)
            words = align_words(transcriber, audio, text, audio_path)
        except DataError as exc:
            report["skipped"].append({"audio": audio_path, "reason": str(exc)})
            continue
        kept = 0
        for n, seg in enumerate(segments(words, len(audio) / sr, max_seconds, pad)):
            if seg.confidence < min_confidence:
                report["dropped"].append({"audio": audio_path, **asdict(seg)})
                continue
            name = f"{stem}-{n:04d}.wav"
            write_wav(str(out / name), original[int(round(seg.start * original_sr)):int(round(seg.end * original_sr))],
                      original_sr)
            rows.append({"file_name": name, "text": seg.text, "speaker": speaker or stem, "source": audio_path,
                         "start": seg.start, "end": seg.end, "confidence": seg.confidence})
            kept += 1
        report["recordings"].append({"audio": audio_path, "seconds": round(len(audio) / sr, 3), "words": len(words),
                                     "segments": kept})
    write_csv(out / "metadata.csv", rows, ["file_name", "text", "speaker", "source", "start", "end", "confidence"])
    report["segments"] = len(rows)
    report["seconds"] = round(sum(r["end"] - r["start"] for r in rows), 3)
    write_json(out / "segment_report.json", report)
    return report
