"""Write a synthetic espeak-ng speech corpus in the Hugging Face ``audiofolder`` layout.

Why: the toolkit needs a speech data set that exists offline, costs seconds to make and
has an honest test split. Test speakers are *unseen timbres*: a few whole voice variants
(2 male + 1 female families of near-identical variants) are held out and used only for
test, with every accent.

Layout::

    out_dir/corpus.json                 counts, hours, voices, parameters
    out_dir/{train,test}/metadata.csv   file_name,text,speaker
    out_dir/{train,test}/000000.wav     PCM_16 mono at ``sample_rate``

The folder is built under ``out_dir.tmp-XXXX`` and renamed into place, so ``out_dir``
either does not exist or is complete; a complete folder made with the same parameters is
reused as is.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
import queue
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from pipeline.errors import DataError
from pipeline.synth import espeak
from pipeline.synth.sentences import make_sentences

FORMAT_VERSION = 2  # bump whenever the same parameters would produce different files
SPLITS = ("train", "test")
RATE_WPM = (105, 165)  # espeak wpm; about 11-17 characters per second, like natural read speech
PITCH = (30, 70)
PITCH_RANGE = (30, 70)
HELD_OUT_MALE, HELD_OUT_FEMALE = 2, 1
TRIM_DB = -40.0  # samples below peak-40 dB at either end count as silence
PAD_SECONDS = 0.1  # silence at each end after trimming (kept, or added when espeak gave less)
PEAK = 0.9


@dataclass(frozen=True)
class Job:
    """One utterance to render; planned up front so the corpus depends only on the seed."""

    split: str
    file_name: str
    text: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int


def split_voices(voices: list[str], rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    """Hold out whole variant families for test: returns (train voices, test voices, held-out variants).

    ``HELD_OUT_MALE`` male and ``HELD_OUT_FEMALE`` female families are drawn, so no test
    timbre has a near-identical sibling variant in train.
    """
    families: dict[str, list[str]] = {}
    for v in dict.fromkeys(v.split("+", 1)[1] for v in voices if "+" in v):
        families.setdefault(espeak.variant_family(v), []).append(v)
    male = [f for f in families if f not in espeak.FEMALE_VARIANTS]
    female = [f for f in families if f in espeak.FEMALE_VARIANTS]
    if len(male) <= HELD_OUT_MALE or len(female) <= HELD_OUT_FEMALE:
        raise RuntimeError(
            f"too few espeak voice families to hold some out ({len(male)} male, {len(female)} female)"
        )
    chosen = rng.sample(male, HELD_OUT_MALE) + rng.sample(female, HELD_OUT_FEMALE)
    held = [v for f in chosen for v in families[f]]
    test = [v for v in voices if v.split("+", 1)[-1] in held]
    train = [v for v in voices if v not in test]
    return train, test, held


def _unique_sentences(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct sentences, so no test transcript also occurs in train."""
    seen: dict[str, None] = {}
    while len(seen) < n:
        for s in make_sentences(n - len(seen), rng):
            seen.setdefault(s, None)
    return list(seen)


def plan(n_train: int, n_test: int, seed: int) -> tuple[list[Job], dict[str, Any]]:
    """Choose every utterance's text, voice, rate and pitch from ``seed`` alone."""
    rng = random.Random(seed)
    train_voices, test_voices, held = split_voices(espeak.list_voices(), rng)
    texts = _unique_sentences(n_train + n_test, rng)
    jobs: list[Job] = []
    for split, n, pool, offset in (
        ("train", n_train, train_voices, 0),
        ("test", n_test, test_voices, n_train),
    ):
        for i in range(n):
            jobs.append(
                Job(
                    split=split,
                    file_name=f"{i:06d}.wav",
                    text=texts[offset + i],
                    voice=rng.choice(pool),
                    rate=rng.randint(*RATE_WPM),
                    pitch=rng.randint(*PITCH),
                    pitch_range=rng.randint(*PITCH_RANGE),
                )
            )
    voices = {"train": train_voices, "test": test_voices, "held_out_variants": held}
    return jobs, voices


def resample(audio: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """``torchaudio.functional.resample`` on the input zero-padded to a multiple of 0.2 s.

    oneDNN caches a convolution primitive (~1 MB) per distinct input length, so thousands
    of clips of distinct lengths grew the process by ~1 GB. The resampler treats the signal
    as zero beyond its end anyway, so padding and cutting back gives identical output.
    """
    import torch
    import torchaudio.functional as AF

    block = max(1, orig_sr // 5)
    padded = np.pad(audio, (0, -len(audio) % block)).astype(np.float32, copy=False)
    out = AF.resample(torch.from_numpy(padded), orig_sr, sample_rate).numpy()
    return out[: math.ceil(len(audio) * sample_rate / orig_sr)]


def postprocess(audio: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """Trim or pad to ``PAD_SECONDS`` of silence at each end, resample, scale the peak to ``PEAK``."""
    return postprocess_with_shift(audio, orig_sr, sample_rate)[0]


def postprocess_with_shift(audio: np.ndarray, orig_sr: int, sample_rate: int) -> tuple[np.ndarray, int]:
    """``postprocess`` plus the shift (in ``orig_sr`` samples) it applied before resampling.

    Sample ``s`` of espeak's output sits at ``(s + shift) * sample_rate / orig_sr`` in the result;
    pipeline.tts.phonemes maps espeak's phoneme events onto a corpus file with it.
    """
    from pipeline.audio import loud_span  # torch comes with it: imported when first needed, as in `resample`

    span = loud_span(audio, TRIM_DB)
    if span is None:
        raise RuntimeError("espeak produced silent audio")
    pad = int(PAD_SECONDS * orig_sr)
    first, last = span
    start, end = max(0, first - pad), min(len(audio), last + pad)
    # espeak starts speaking within ~10 ms, so top up with digital silence to PAD_SECONDS
    audio = np.pad(audio[start:end], (pad - (first - start), pad - (end - last)))
    shift = pad - first
    if sample_rate != orig_sr:
        audio = resample(audio, orig_sr, sample_rate)
    audio = audio * (PEAK / max(float(np.max(np.abs(audio))), 1e-9))
    return np.clip(audio, -1.0, 1.0).astype(np.float32), shift


def render(job: Job, root: Path, sample_rate: int) -> float:
    """Synthesise, post-process and write one job; returns its duration in seconds."""
    syn = espeak.synthesize(job.text, job.voice, rate=job.rate, pitch=job.pitch, pitch_range=job.pitch_range)
    audio = postprocess(syn.audio, syn.sample_rate, sample_rate)
    sf.write(root / job.split / job.file_name, audio, sample_rate, subtype="PCM_16", format="WAV")
    return len(audio) / sample_rate


def replay(jobs: list[Job], sample_rate: int, list_voices_first: bool) -> list[tuple[int, int, list[tuple[str, int, int]]]]:
    """Re-synthesise ``jobs`` as a writer process did: (file length, trim shift, espeak phoneme events) each.

    espeak's output depends on the calls its process made before, so run this in a process that
    has not used espeak yet: ``list_voices_first`` for the serial writer (``plan`` listed the voices
    first), not for a worker shard. Lives here, not in pipeline.tts, so a spawned process imports
    only this package (and torch for resampling).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see _render_serial
    try:
        if list_voices_first:
            espeak.list_voices()
        out = []
        for job in jobs:
            syn = espeak.synthesize(job.text, job.voice, rate=job.rate, pitch=job.pitch, pitch_range=job.pitch_range)
            audio, shift = postprocess_with_shift(syn.audio, syn.sample_rate, sample_rate)
            out.append((len(audio), shift, syn.phonemes))
        return out
    finally:
        torch.set_num_threads(threads)


def _render_serial(jobs: list[Job], root: Path, sample_rate: int, bar: tqdm) -> list[float]:
    """Render in this process with torch limited to one thread meanwhile.

    Resampling one short clip with torch's default intra-op threads is ~50x slower when
    another process is busy on the same cores (threads wait on each other), so one thread.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        durations = []
        for job in jobs:
            durations.append(render(job, root, sample_rate))
            bar.update(1)
        return durations
    finally:
        torch.set_num_threads(threads)


def _worker(jobs: list[tuple[int, Job]], root: str, sample_rate: int, out: Any) -> None:
    """Worker process body: a static shard of jobs (its own espeak singleton), results to ``out``."""
    try:
        import torch

        torch.set_num_threads(1)
        for idx, job in jobs:
            out.put(("ok", idx, render(job, Path(root), sample_rate)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        out.put(("err", -1, f"{type(exc).__name__}: {exc}"))


def _render_parallel(jobs: list[Job], root: Path, sample_rate: int, workers: int, bar: tqdm) -> list[float]:
    """Render with ``workers`` spawned processes, each given a fixed round-robin shard.

    Fixed shards (not a work queue) keep each process's sequence of espeak calls, and
    therefore the audio, the same from run to run. Spawn, not fork: torch is imported.
    """
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    indexed = list(enumerate(jobs))
    procs = [
        ctx.Process(target=_worker, args=(indexed[k::workers], str(root), sample_rate, results), daemon=True)
        for k in range(workers)
    ]
    durations = [0.0] * len(jobs)
    try:
        for p in procs:
            p.start()
        done = 0
        while done < len(jobs):
            try:
                kind, idx, value = results.get(timeout=2.0)
            except queue.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode != 0]
                if dead:
                    raise RuntimeError(f"synthesis worker died (exit code {dead[0].exitcode})") from None
                continue
            if kind == "err":
                raise RuntimeError(f"synthesis worker failed: {value}")
            durations[idx] = value
            done += 1
            bar.update(1)
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    return durations


def _complete(folder: Path) -> dict[str, Any] | None:
    """The recorded corpus.json if ``folder`` holds a complete corpus, else None."""
    try:
        info = json.loads((folder / "corpus.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((folder / split / "metadata.csv").is_file() for split in SPLITS):
        return None
    return info if isinstance(info, dict) else None


def _reuse(out_dir: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """Return the existing corpus if it matches ``params``; raise if ``out_dir`` holds anything else."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return None
    info = _complete(out_dir)
    if info is None:
        raise DataError(
            f"{out_dir} exists but is not a complete synthetic corpus; pick another folder or delete it"
        )
    if info.get("params") != params:
        raise DataError(
            f"{out_dir} holds a corpus made with {info.get('params')}, not {params}; pick another folder or delete it"
        )
    return info


def synthesize_corpus(
    out_dir: str | Path,
    n_train: int = 3000,
    n_test: int = 200,
    seed: int = 0,
    sample_rate: int = 16000,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Build (or reuse) the corpus in ``out_dir`` and return the contents of its corpus.json.

    ``workers > 1`` renders in that many spawned processes. The default is 1: on the shared
    2-core development machine 2 workers were not clearly faster (3200 utterances: 26-45 s
    serial, 25-52 s with 2 workers, depending on other load) and cost ~2 s of start-up; at 9000
    utterances (the demo's corpus since 2026-12-07) 2 workers took 33 s against 58 s serial.
    The returned dict also carries ``path`` and ``reused`` (not stored in corpus.json).
    """
    if n_train < 1 or n_test < 1 or sample_rate < 8000 or workers < 1:
        raise DataError(
            "need n_train >= 1, n_test >= 1, sample_rate >= 8000, workers >= 1 "
            f"(got {n_train}, {n_test}, {sample_rate}, {workers})"
        )
    out_dir = Path(out_dir)
    params = {
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
        "sample_rate": sample_rate,
        "format": FORMAT_VERSION,
    }
    info = _reuse(out_dir, params)
    if info is not None:
        return {**info, "path": str(out_dir), "reused": True}

    start = time.perf_counter()
    jobs, voices = plan(n_train, n_test, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for split in SPLITS:
            (tmp / split).mkdir()
        with tqdm(
            total=len(jobs), desc=f"synthesising {out_dir.name}", unit="utt", disable=not progress
        ) as bar:
            if workers > 1:
                durations = _render_parallel(jobs, tmp, sample_rate, workers, bar)
            else:
                durations = _render_serial(jobs, tmp, sample_rate, bar)
        for split in SPLITS:
            with open(tmp / split / "metadata.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["file_name", "text", "speaker"])
                writer.writerows([j.file_name, j.text, j.voice] for j in jobs if j.split == split)
        hours = {
            s: sum(d for d, j in zip(durations, jobs, strict=True) if j.split == s) / 3600 for s in SPLITS
        }
        info = {
            "params": params,
            "seed": seed,
            "sample_rate": sample_rate,
            "counts": {s: sum(j.split == s for j in jobs) for s in SPLITS},
            "hours": {s: round(h, 4) for s, h in hours.items()},
            "voices": {s: voices[s] for s in SPLITS},
            "speakers_used": {s: len({j.voice for j in jobs if j.split == s}) for s in SPLITS},
            "held_out_variants": voices["held_out_variants"],
            "synthesis": {
                "engine": f"espeak-ng {espeak.version()}",
                "rate_wpm": list(RATE_WPM),
                "pitch": list(PITCH),
                "pitch_range": list(PITCH_RANGE),
                "trim_db": TRIM_DB,
                "pad_seconds": PAD_SECONDS,
                "peak": PEAK,
                "workers": workers,
                "seconds": round(time.perf_counter() - start, 1),
            },
        }
        (tmp / "corpus.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, out_dir)  # atomic; also replaces an empty folder
        except OSError:
            existing = _reuse(out_dir, params)  # someone else finished first: theirs if it matches
            if existing is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return {**existing, "path": str(out_dir), "reused": True}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "path": str(out_dir), "reused": False}
