"""Phonemes for the acoustic model: espeak-ng phoneme events, a vocabulary, and per-phoneme durations.

Why espeak's *events* (not `espeak.phonemize`'s string): the events are the exact phoneme sequence
espeak spoke, one token each with its stress mark (``'eI``, ``,V``), and for a synthetic utterance
they also say where in the audio each phoneme lies. Training and inference therefore tokenise text
the same way: inference synthesises the text once with the model's voice and keeps only the events.

Durations for the synthetic corpus (pipeline.synth.corpus). The corpus stores no events, but it is
planned from its seed alone: `corpus.plan(**params)` gives back every utterance's text, voice, rate
and pitch. Each utterance is re-synthesised with those settings and post-processed exactly as the
corpus writer did (`postprocess_with_shift`, which also returns the trim shift); its events are used
only when the re-synthesis is exactly as long (in samples) as the file on disk. espeak is not
bit-reproducible across calls (flutter state carries over), so a few utterances (about 1 in 60 on
data/synth) come out a little longer or shorter: those are skipped and reported, never stretched.
The result is cached per corpus split (`SPEECH_PIPELINE_CACHE`), so it is paid once (~20 ms each).
This keeps corpus FORMAT_VERSION and the existing data/synth untouched.

Frames: mel frame k is centred on sample ``k * hop`` (centred framing) or ``k * hop + hop / 2``
(HiFi-GAN framing); it belongs to the phoneme whose span holds its centre, so the durations sum to
`MelConfig.frames(num_samples)` exactly. The PAD_SECONDS of silence the corpus writer puts at each end
become explicit ``<sil>`` tokens (inference adds them too), so no phoneme absorbs 100 ms of silence.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import DataError, ModelError
from pipeline.tts.mel import MelConfig

logger = logging.getLogger(__name__)

PAD, UNK, SIL = "<pad>", "<unk>", "<sil>"
SPECIALS = (PAD, UNK, SIL)
VOCAB_FILE = "phonemes.json"
ALIGN_VERSION = 1  # bump when the cached alignments would change

Span = tuple[str, int, int]  # (phoneme, start sample, end sample)


# ------------------------------------------------------------------------------------------------
# Vocabulary


@dataclass
class PhonemeVocab:
    """Phoneme tokens <-> ids; id 0 is padding (FastSpeech2Conformer's embedding ignores it)."""

    tokens: list[str]
    voice: str = "en-us"  # espeak voice that phonemises text at inference

    def __post_init__(self) -> None:
        if list(self.tokens[: len(SPECIALS)]) != list(SPECIALS):
            raise ModelError(f"phoneme vocabulary: must start with {', '.join(SPECIALS)}")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, sequences: list[list[str]], voice: str = "en-us") -> PhonemeVocab:
        """Vocabulary of every phoneme in `sequences`, sorted (deterministic across runs)."""
        seen = sorted({p for seq in sequences for p in seq} - set(SPECIALS))
        return cls([*SPECIALS, *seen], voice)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return 0

    def encode(self, phonemes: list[str]) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(p, unk) for p in phonemes]

    def unknown(self, phonemes: list[str]) -> list[str]:
        return sorted({p for p in phonemes if p not in self.index})

    def save(self, directory: str | Path) -> None:
        from pipeline.io import write_json

        write_json(Path(directory) / VOCAB_FILE, {"tokens": self.tokens, "voice": self.voice, "source": "espeak-ng phoneme events"})

    @classmethod
    def load(cls, directory: str | Path) -> PhonemeVocab:
        path = Path(directory) / VOCAB_FILE
        if not path.is_file():
            raise ModelError(f"{directory}: no {VOCAB_FILE} (not an acoustic model saved by this toolkit?)")
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(list(raw["tokens"]), str(raw.get("voice", "en-us")))


# ------------------------------------------------------------------------------------------------
# Text -> phonemes


def text_to_phonemes(text: str, voice: str = "en-us") -> list[str]:
    """espeak's phoneme sequence for `text` in `voice`, wrapped in ``<sil>`` as in training."""
    from pipeline.synth import espeak

    try:
        syn = espeak.synthesize(text, voice)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    phonemes = [name for name, _, _ in syn.phonemes]
    if not phonemes:
        raise DataError(f"espeak produced no phonemes for {text[:60]!r}")
    return [SIL, *phonemes, SIL]


# ------------------------------------------------------------------------------------------------
# Durations


def frame_durations(starts: list[int], num_samples: int, mel: MelConfig) -> list[int]:
    """Frames per unit from each unit's start sample (sorted, the first one at 0).

    A frame belongs to the unit whose span holds its centre; the result sums to
    ``mel.frames(num_samples)`` exactly (a unit may get 0 frames).
    """
    frames = mel.frames(num_samples)
    offset = 0 if mel.framing == "center" else mel.hop_length // 2
    bounds = [0]
    for s in starts[1:]:
        b = math.ceil((s - offset) / mel.hop_length)
        bounds.append(min(max(b, bounds[-1]), frames))
    bounds.append(frames)
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def spans_in_file(events: list[Span], shift: int, orig_sr: int, sample_rate: int, num_samples: int, pad: int) -> list[Span]:
    """espeak events -> spans in the post-processed file, with ``<sil>`` over the padded ends.

    `shift` is what `postprocess_with_shift` added before resampling; `pad` is the silence (in
    `sample_rate` samples) the corpus writer left at each end.
    """
    ratio = sample_rate / orig_sr
    lo, hi = pad, max(pad, num_samples - pad)
    spans: list[Span] = [(SIL, 0, lo)]
    for name, start, end in events:
        s = min(max(round((start + shift) * ratio), lo), hi)
        e = min(max(round((end + shift) * ratio), s), hi)
        spans.append((name, s, e))
    spans.append((SIL, hi, num_samples))
    return spans


def _corpus_key(corpus_dir: Path, info: dict[str, Any]) -> str:
    from pipeline.synth import espeak

    blob = json.dumps([ALIGN_VERSION, str(corpus_dir.resolve()), info.get("params"), espeak.version()], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def synthetic_alignments(split_dir: str | Path, cache_dir: str | Path) -> dict[str, list[Span] | None]:
    """Phoneme spans (in samples of each file) of a synthetic-corpus split, by file name.

    espeak's output depends on the sequence of calls a process made before, so the corpus writer's
    sequence is replayed (`corpus.replay`) in a process that had not used espeak: this one when it
    has not (serial writer only), else fresh spawned ones: one that lists the voices (as `plan` did)
    and then renders every job in order, or one per worker shard (`workers` > 1). Both splits are
    cached together. None for an utterance whose re-synthesis is not exactly as long as its file.
    Raises DataError when `split_dir` is not a split of a corpus made by pipeline.synth.corpus.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import soundfile as sf

    from pipeline.synth import corpus, espeak

    split_dir = Path(split_dir)
    root, split = split_dir.parent, split_dir.name
    info_path = root / "corpus.json"
    if split not in corpus.SPLITS or not info_path.is_file():
        raise DataError(f"{split_dir}: phoneme durations come from re-synthesising a synthetic corpus (a train/ or test/ "
                        f"folder next to corpus.json, made by scripts/synth_corpus.py); other data needs "
                        f"acoustic.durations=ctc with an acoustic.aligner (CTC forced alignment)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    params = info.get("params") or {}
    if params.get("format") != corpus.FORMAT_VERSION:
        raise DataError(f"{info_path}: corpus format {params.get('format')} is not {corpus.FORMAT_VERSION}: rebuild it")
    cache = Path(cache_dir) / "tts_alignments" / f"{_corpus_key(root, info)}.json"
    if cache.is_file():
        raw = json.loads(cache.read_text(encoding="utf-8"))
        return {k: None if v is None else [tuple(x) for x in v] for k, v in raw[split].items()}

    fresh = espeak._ENGINE is None  # nothing has used espeak in this process yet: it can replay the writer itself
    jobs, _ = corpus.plan(params["n_train"], params["n_test"], params["seed"])
    for name in corpus.SPLITS:
        with open(root / name / "metadata.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        mine = [j for j in jobs if j.split == name]
        if len(rows) != len(mine) or any(r["file_name"] != j.file_name or r["text"] != j.text or r["speaker"] != j.voice
                                         for r, j in zip(rows, mine, strict=False)):
            raise DataError(f"{root / name}/metadata.csv: does not match the corpus plan of {info_path} (edited, or "
                            f"another espeak-ng voice list): its phoneme durations cannot be recovered")
    workers = int((info.get("synthesis") or {}).get("workers", 1))
    shards = [list(range(len(jobs)))] if workers <= 1 else [list(range(k, len(jobs), workers)) for k in range(workers)]
    sample_rate = int(params["sample_rate"])
    results: dict[int, tuple[int, int, list[Span]]] = {}
    logger.info("re-synthesising %d utterances of %s for their phoneme durations (once; cached)", len(jobs), root)
    ctx = mp.get_context("spawn")
    for shard in shards:  # one fresh process each, one after the other: each replays one writer process
        if fresh and workers <= 1:  # plan() above listed the voices, exactly as the writer's did
            got = corpus.replay([jobs[i] for i in shard], sample_rate, list_voices_first=False)
        else:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                got = pool.submit(corpus.replay, [jobs[i] for i in shard], sample_rate, workers <= 1).result()
        results.update(zip(shard, got, strict=True))
    pad = round(int(corpus.PAD_SECONDS * espeak.SAMPLE_RATE) * sample_rate / espeak.SAMPLE_RATE)
    table: dict[str, dict[str, list[Span] | None]] = {name: {} for name in corpus.SPLITS}
    for i, job in enumerate(jobs):
        length, shift, events = results[i]
        try:
            expected = sf.info(str(root / job.split / job.file_name)).frames
        except Exception:  # a missing or unreadable file is reported by the data preparation
            expected = -1
        ok = length == expected and bool(events)
        table[job.split][job.file_name] = (spans_in_file(events, shift, espeak.SAMPLE_RATE, sample_rate, length, pad)
                                           if ok else None)
    for name, spans in table.items():
        missed = sum(v is None for v in spans.values())
        logger.info("%s/%s: phoneme durations for %d of %d utterances (%d re-synthesised to another length: skipped)",
                    root, name, len(spans) - missed, len(spans), missed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(table), encoding="utf-8")
    os.replace(tmp, cache)
    return table[split]
