"""Phoneme durations for recorded speech, by CTC forced alignment with an ASR model of this project.

Recorded data has no phoneme events, so `acoustic.durations: ctc` times them in two steps:

1. **Words**, from the recording: a character CTC model (`acoustic.aligner`: any model directory this
   toolkit trained, or a Hub CTC checkpoint with a character vocabulary and a word delimiter) scores the
   utterance, and `torchaudio.functional.forced_align` finds the most likely path through the transcript's
   characters (normalised the way the aligner was trained). A word starts at the first frame of its first
   character, less the model's lag (how far the last character's spike comes after the end of the signal's
   energy; CTC spikes tend to come late), and the first word where the signal's energy begins.
2. **Phonemes within a word**, from espeak-ng: the text is phonemised exactly as at inference
   (`pipeline.tts.phonemes.text_to_phonemes`: the same call, the same events), the events are grouped by
   espeak's word events, and each word's phonemes share the time from its start to the next word's
   start in proportion to espeak's own durations. Pauses espeak puts after a word (``_:``) take their
   share the same way. The last word ends where the recording's energy last rises above -40 dB of its
   peak; ``<sil>`` covers the time before the first word and after the last one.

Alignments are computed when training first sees a split (one ASR forward pass per utterance: 76 FSDD
clips a second on 2 CPU threads) and cached, so later and resumed runs read the same durations.
Utterances that cannot be aligned are skipped with a reason (characters the aligner cannot spell, a
transcript longer than the audio allows, espeak reading another number of words than the transcript has).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelError
from pipeline.evaluation.timestamps import speech_bounds
from pipeline.tts.phonemes import SIL, Span

CTC_ALIGN_VERSION = 1  # bump when the same aligner and data would give other spans


def group_by_word(phonemes: list[Span], words: list[tuple[int, int, int]]) -> list[list[Span]]:
    """espeak phoneme events -> one list per espeak word event (a phoneme belongs to the last word that
    started at or before it); words without phonemes are dropped."""
    starts = [sample for _, _, sample in words] or [0]
    groups: list[list[Span]] = [[] for _ in starts]
    k = 0
    for span in phonemes:
        while k + 1 < len(starts) and starts[k + 1] <= span[1]:
            k += 1
        groups[k].append(span)
    return [g for g in groups if g]


def word_starts(log_probs: torch.Tensor, targets: list[int], blank: int, delimiter: int) -> tuple[list[int], int]:
    """(first frame of each word, the frame after the last character) of the forced CTC alignment of
    `targets` (character ids, `delimiter` between words) to `log_probs` (frames, vocab)."""
    import torchaudio.functional as AF

    from pipeline.evaluation.timestamps import group_words, token_runs

    path, _ = AF.forced_align(log_probs[None].float(), torch.tensor([targets], dtype=torch.int32), blank=blank)
    words = group_words(token_runs(path[0].tolist(), blank), delimiter)
    return [w[0][1] for w in words], (words[-1][-1][2] if words else 0)


def distribute(groups: list[list[Span]], bounds: list[int]) -> list[Span]:
    """Each word's phonemes over [bounds[w], bounds[w + 1]) in proportion to espeak's durations."""
    spans: list[Span] = []
    for group, lo, hi in zip(groups, bounds[:-1], bounds[1:], strict=True):
        weights = np.array([max(end - start, 0) for _, start, end in group], dtype=np.float64)
        if weights.sum() <= 0:
            weights = np.ones(len(group))
        edges = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        edges = np.round(edges).astype(int)
        spans.extend((name, int(a), int(b)) for (name, _, _), a, b in zip(group, edges[:-1], edges[1:], strict=True))
    return spans


class CTCAligner:
    """Phoneme spans (in samples at `sample_rate`) of recorded utterances; see the module docstring."""

    def __init__(self, model_dir: str, voice: str = "en-us", device: str | torch.device = "cpu") -> None:
        from pipeline.data.text import get_normalizer
        from pipeline.evaluation.evaluate import load_model_dir
        from pipeline.evaluation.inference import Transcriber

        model, fe, tok, meta = load_model_dir(model_dir, device=device)
        self.delimiter = getattr(tok, "word_delimiter_token_id", None)
        if self.delimiter is None or tok.unk_token_id is None:
            raise ModelError(f"acoustic.aligner: {model_dir} has no character vocabulary with a word delimiter "
                             f"({type(tok).__name__}); train one with model.tokenizer=characters")
        self.tokenizer = tok
        self.transcriber = Transcriber(model, fe, tok, device=device, workers=1)
        self.blank = self.transcriber.blank
        self.asr_rate = int(fe.sampling_rate)
        self.normalize = get_normalizer(meta.get("normalizer", "default"))
        self.voice = voice
        self.name = str(model_dir)

    def align(self, audio: np.ndarray, sample_rate: int, text: str) -> list[Span] | str:
        """Spans covering the whole of `audio` (a list), or why this utterance cannot be aligned (a str)."""
        from pipeline.audio import resample
        from pipeline.synth import espeak

        words = self.normalize(text).split()
        if not words:
            return "empty transcript"
        targets = self.tokenizer(" ".join(words)).input_ids
        if self.tokenizer.unk_token_id in targets:  # e.g. an uppercase vocabulary (facebook/wav2vec2-base-960h)
            targets = self.tokenizer(" ".join(words).upper()).input_ids
        if self.tokenizer.unk_token_id in targets or not targets:
            return "characters the aligner cannot spell"
        syn = espeak.synthesize(text, self.voice)  # what text_to_phonemes(text, voice) speaks
        groups = group_by_word(syn.phonemes, syn.words)
        if len(groups) != len(words):
            return f"espeak reads {len(groups)} words, the transcript has {len(words)}"
        heard = resample(audio, sample_rate, self.asr_rate) if sample_rate != self.asr_rate else audio
        logits, mask = self.transcriber.forward([heard.astype(np.float32)])
        frames = int(mask[0].sum())
        log_probs = logits[0, :frames].log_softmax(-1)
        try:
            starts, last = word_starts(log_probs, targets, self.blank, self.delimiter)
        except RuntimeError:  # forced_align: more targets (and repeats) than frames
            return "too short for its transcript"
        n = len(audio)
        per_frame = n / max(frames, 1)
        lo, hi = speech_bounds(audio)
        # CTC spikes come in the right order and about the right distance apart, but a model with global
        # attention may emit them a few frames late (the quickstart Conformer: ~3 frames). Measure that lag
        # where the last character ends against where the signal's energy does, and take it off every word;
        # the first word starts where the signal's energy does.
        lag = max(0.0, last * per_frame - hi)
        bounds = [lo] + [min(max(round(s * per_frame - lag), lo), hi) for s in starts[1:]]
        bounds = list(itertools.accumulate(bounds, max))  # never before the previous word's start
        return [(SIL, 0, bounds[0]), *distribute(groups, [*bounds, hi]), (SIL, hi, n)]


def ctc_alignments(rows: Any, aligner: CTCAligner, sample_rate: int, progress: bool = True) -> dict[int, list[Span] | str]:
    """Spans (or a skip reason) of every row of a prepared split (`audio`, `text`), by its `row` number (file
    names need not be unique, nor exist, in a Hub dataset)."""
    from tqdm.auto import tqdm

    from pipeline.audio import read_audio
    from pipeline.errors import DataError

    out: dict[int, list[Span] | str] = {}
    for row in tqdm(rows, desc="aligning (CTC)", unit="utt", disable=not progress):
        try:
            audio = read_audio(row["audio"], sample_rate)[0]
        except DataError as exc:
            out[int(row["row"])] = f"unreadable: {exc}"
            continue
        out[int(row["row"])] = aligner.align(audio, sample_rate, row["text"])
    return out


def aligner_fingerprint(model_dir: str) -> str:
    """What identifies an aligner's output: a local directory's config and weight files (name, size, mtime),
    or a Hub id as it is."""
    import hashlib

    path = Path(model_dir)
    if not path.is_dir():
        return model_dir
    h = hashlib.sha1(str(path.resolve()).encode())
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin") or f.name == "vocab.json"):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cached_ctc_alignments(rows: Any, make_aligner: Any, model_dir: str, voice: str, sample_rate: int, source: str,
                          cache_dir: str | Path, progress: bool = True) -> dict[int, list[Span] | str]:
    """`ctc_alignments`, stored once per (aligner, data, voice, rate) under `cache_dir`: later runs, and a
    resumed one, read the very same durations. `make_aligner()` builds the CTCAligner on a miss only."""
    import hashlib
    import json
    import os

    from pipeline.synth import espeak

    blob = json.dumps([CTC_ALIGN_VERSION, aligner_fingerprint(model_dir), source, len(rows), voice, sample_rate,
                       espeak.version()])
    cache = Path(cache_dir) / "tts_alignments" / f"ctc-{hashlib.sha1(blob.encode()).hexdigest()[:20]}.json"
    if cache.is_file():
        raw = json.loads(cache.read_text(encoding="utf-8"))
        return {int(k): v if isinstance(v, str) else [tuple(x) for x in v] for k, v in raw.items()}
    out = ctc_alignments(rows, make_aligner(), sample_rate, progress=progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({str(k): v for k, v in out.items()}), encoding="utf-8")
    os.replace(tmp, cache)
    return out


def boundary_errors(aligner: CTCAligner, split_dir: str | Path, cache_dir: str | Path, limit: int | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """How exact `aligner` is where the truth is known: its phoneme starts against espeak's own events on a
    split of a synthetic corpus (`synthetic_alignments`), in milliseconds. Only utterances whose phonemes
    in the aligner's voice equal those of the voice that spoke them are compared (the others are counted)."""
    import csv

    from tqdm.auto import tqdm

    from pipeline.audio import read_audio
    from pipeline.tts.phonemes import synthetic_alignments

    split_dir = Path(split_dir)
    truth = synthetic_alignments(split_dir, cache_dir)
    with open(split_dir / "metadata.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if limit is not None:
        rows = rows[:limit]
    errors: list[float] = []
    counts = {"compared": 0, "other phonemes": 0, "no true durations": 0}
    skipped: dict[str, int] = {}
    for row in tqdm(rows, desc="aligning", unit="utt", disable=not progress):
        true = truth.get(row["file_name"])
        if not true:
            counts["no true durations"] += 1
            continue
        audio, sr = read_audio(str(split_dir / row["file_name"]))
        got = aligner.align(audio, sr, row["text"])
        if isinstance(got, str):
            skipped[got] = skipped.get(got, 0) + 1
            continue
        if [p for p, _, _ in got] != [p for p, _, _ in true]:
            counts["other phonemes"] += 1
            continue
        counts["compared"] += 1
        errors += [abs(g[1] - t[1]) * 1000.0 / sr for g, t in zip(got[1:-1], true[1:-1], strict=True)]
    e = np.asarray(errors) if errors else np.full(1, np.nan)
    return {"aligner": aligner.name, "data": str(split_dir), "utterances": len(rows), **counts, "skipped": skipped,
            "boundaries": len(errors), "median_ms": float(np.median(e)), "mean_ms": float(np.mean(e)),
            "p90_ms": float(np.percentile(e, 90)), "within_20ms": float(np.mean(e <= 20)),
            "within_40ms": float(np.mean(e <= 40))}
