#!/usr/bin/env python
"""Segmenting long recordings (`scripts/segment.py`) against the truth and against a naive split.

Long recordings are built from held-out utterances (`--data`, e.g. the synthetic corpus's test split): `--per`
utterances end to end with a random pause of 0.1-0.8 s after each, the transcript their texts joined. So the
truth is known: which utterance every word belongs to and where each utterance's speech lies (its samples
within -40 dB of its peak, measured alone). Two arms cut each recording into segments of at most
`--max-seconds` at the widest pauses between words (`pipeline.data.segment.split_words`), from word times:

- ours: the CTC forced alignment of the transcript (`align_words`, what scripts/segment.py uses);
- naive: the transcript spread evenly over the recording, each word's share of time by its characters
  (what one gets without an alignment);
- oracle: each utterance's words spread that way over the utterance's true speech span (cuts at utterance
  boundaries exact; the WER of segments of these sizes cut right).

Columns: segments; cuts at an utterance boundary that fall in that boundary's true pause (both cut edges
within the silence between the two utterances' speech, 20 ms of slack); the WER of the same model transcribing
each segment against the segment's text (a segment cut in the wrong place holds other words than its text
says), against the oracle's; the model's WER on the original utterances, one at a time, is printed above
the table. Under the table, `--swap` recordings have one utterance's text replaced by another's (a transcript that
does not match its audio there): the confidence of the segments holding wrong text against the rest's (the
signal `--min-confidence` filters on), and what a few thresholds would drop.

  python benchmarks/segment.py --model runs/quickstart --data data/synth/test
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import command_line, machine_line

SLACK = 0.02


def build(rows: list[dict[str, str]], folder: Path, sr: int, per: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Recordings of `per` utterances each: audio, transcript words, each word's utterance, speech spans."""
    from pipeline.audio import read_audio
    from pipeline.evaluation.timestamps import speech_bounds

    out = []
    for k in range(len(rows) // per):
        parts, words, owner, speech, t = [], [], [], [], 0
        for u, row in enumerate(rows[k * per:(k + 1) * per]):
            audio = read_audio(str(folder / row["file_name"]), sr)[0]
            first, last = speech_bounds(audio)
            speech.append(((t + first) / sr, (t + last) / sr))
            pause = np.zeros(int(rng.uniform(0.1, 0.8) * sr), dtype=np.float32)
            parts += [audio, pause]
            t += len(audio) + len(pause)
            for w in row["text"].split():
                words.append(w)
                owner.append(u)
        out.append({"audio": np.concatenate(parts), "words": words, "owner": owner, "speech": speech})
    return out


def naive_words(words: list[str], seconds: float) -> list[dict[str, Any]]:
    """Words spread over the recording in proportion to their characters (a space's worth between words)."""
    total = sum(len(w) + 1 for w in words)
    out, t = [], 0.0
    for w in words:
        share = (len(w) + 1) / total * seconds
        out.append({"word": w, "start": t, "end": t + share * len(w) / (len(w) + 1)})
        t += share
    return out


def oracle_words(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Each utterance's words spread by characters over that utterance's true speech span."""
    out = []
    for u, (lo, hi) in enumerate(rec["speech"]):
        words = [w for w, o in zip(rec["words"], rec["owner"], strict=True) if o == u]
        out += [{**w, "start": lo + w["start"], "end": lo + w["end"]} for w in naive_words(words, hi - lo)]
    return out


def score_arm(rec: dict[str, Any], words: list[dict[str, Any]], sr: int, max_seconds: float
              ) -> tuple[list[Any], int, int]:
    """(segments, cuts at utterance boundaries, of those the cuts inside the true pause)."""
    from pipeline.data.segment import segments, split_words

    segs = segments(words, len(rec["audio"]) / sr, max_seconds)
    sizes = [len(g) for g in split_words(words, max_seconds)]
    boundary = inside = 0
    last_word = -1
    for k, n in enumerate(sizes[:-1]):
        last_word += n
        u = rec["owner"][last_word]
        if rec["owner"][last_word + 1] == u:
            continue  # a cut inside an utterance: no true pause to compare with
        boundary += 1
        lo, hi = rec["speech"][u][1] - SLACK, rec["speech"][u + 1][0] + SLACK
        inside += lo <= segs[k].end <= hi and lo <= segs[k + 1].start <= hi
    return segs, boundary, inside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="data/synth/test", help="an audiofolder with metadata.csv (file_name, text)")
    ap.add_argument("--per", type=int, default=20, help="utterances per recording")
    ap.add_argument("--max-seconds", type=float, default=15.0)
    ap.add_argument("--swap", type=int, default=10, help="recordings with one utterance's text replaced")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from pipeline.audio import read_audio
    from pipeline.data.segment import align_words, segments, split_words
    from pipeline.data.text import get_normalizer
    from pipeline.evaluation.evaluate import load_model_dir
    from pipeline.evaluation.inference import Transcriber
    from pipeline.evaluation.metrics import error_rates

    load0 = os.getloadavg()[0]
    model, fe, tok, meta = load_model_dir(a.model, device="cpu")
    normalize = get_normalizer(meta.get("normalizer", "default"))
    sr = int(fe.sampling_rate)
    transcriber = Transcriber(model, fe, tok)
    folder = Path(a.data)
    rows = list(csv.DictReader(open(folder / "metadata.csv", encoding="utf-8")))
    rows = [{**r, "text": normalize(r["text"])} for r in rows]
    recordings = build(rows, folder, sr, a.per, np.random.default_rng(0))
    used = rows[: len(recordings) * a.per]
    floor = error_rates([r["text"] for r in used],
                        transcriber.transcribe([read_audio(str(folder / r["file_name"]), sr)[0] for r in used]))["wer"]

    results: dict[str, dict[str, Any]] = {}
    seconds = 0.0
    for arm in ("oracle", "ours", "naive"):
        refs, hyps, boundary, inside, count = [], [], 0, 0, 0
        for rec in recordings:
            t0 = time.perf_counter()
            text = " ".join(rec["words"])
            words = (align_words(transcriber, rec["audio"], text, "benchmark") if arm == "ours"
                     else oracle_words(rec) if arm == "oracle" else naive_words(rec["words"], len(rec["audio"]) / sr))
            if arm == "ours":
                seconds += time.perf_counter() - t0
            segs, b, i = score_arm(rec, words, sr, a.max_seconds)
            boundary, inside, count = boundary + b, inside + i, count + len(segs)
            clips = [rec["audio"][int(s.start * sr):int(s.end * sr)] for s in segs]
            refs += [s.text for s in segs]
            hyps += transcriber.transcribe(clips)
        results[arm] = {"segments": count, "boundary": boundary, "inside": inside,
                        "wer": error_rates(refs, hyps)["wer"]}

    # transcripts that do not match their audio in one place
    rng = np.random.default_rng(1)
    wrong_conf, right_conf = [], []
    for rec in recordings[: a.swap]:
        u = int(rng.integers(1, a.per - 1))
        other = rows[-1 - u]["text"].split()  # an utterance from outside the recordings' text
        spans = [i for i, o in enumerate(rec["owner"]) if o == u]
        words = rec["words"][: spans[0]] + other + rec["words"][spans[-1] + 1:]
        owner = rec["owner"][: spans[0]] + [u] * len(other) + rec["owner"][spans[-1] + 1:]
        aligned = align_words(transcriber, rec["audio"], " ".join(words), "benchmark")
        groups = split_words(aligned, a.max_seconds)
        segs = segments(aligned, len(rec["audio"]) / sr, a.max_seconds)
        first = 0
        for group, seg in zip(groups, segs, strict=True):
            holds = any(owner[j] == u for j in range(first, first + len(group)))
            (wrong_conf if holds else right_conf).append(seg.confidence)
            first += len(group)

    audio_seconds = sum(len(r["audio"]) for r in recordings) / sr
    print()
    print(machine_line(a.threads, load0, os.getloadavg()[0]))
    print(f"command: {command_line()}")
    print(f"model: {a.model}; {len(recordings)} recordings of {a.per} held-out utterances from {a.data} "
          f"({audio_seconds:.1f} s of audio); segments of at most {a.max_seconds:g} s; the model's WER on the "
          f"original utterances: {100 * floor:.2f}%")
    print()
    print("| arm | segments | cuts at an utterance boundary | of those in the true pause | WER of the segments "
          "against their text | vs the oracle's |")
    print("|---|---|---|---|---|---|")
    for arm, r in results.items():
        name = {"oracle": "oracle (the true utterance spans, words spread within each)",
                "ours": "ours (CTC forced alignment)", "naive": "naive (words spread by characters)"}[arm]
        share = r["inside"] / r["boundary"] if r["boundary"] else float("nan")
        print(f"| {name} | {r['segments']} | {r['boundary']} | {r['inside']} ({100 * share:.1f}%) | "
              f"{100 * r['wer']:.2f}% | {r['wer'] / results['oracle']['wer']:.2f}× |")
    print()
    print(f"alignment time: {seconds:.2f} s for {audio_seconds:.1f} s of audio (RTF {seconds / audio_seconds:.4f})")
    if wrong_conf and right_conf:
        w, r = np.array(wrong_conf), np.array(right_conf)
        auroc = float(np.mean([(x < y) + 0.5 * (x == y) for x in w for y in r]))
        print(f"one utterance's text replaced in {min(a.swap, len(recordings))} recordings: segment confidence "
              f"{w.min():.4f}-{w.max():.4f} (mean {w.mean():.4f}) for the {len(w)} segments holding the wrong text, "
              f"{r.min():.4f}-{r.max():.4f} (mean {r.mean():.4f}) for the other {len(r)}; AUROC {auroc:.3f}")
        for threshold in (0.005, 0.01, 0.05):
            print(f"  --min-confidence {threshold:g}: drops {int((w < threshold).sum())} of {len(w)} wrong segments "
                  f"and {int((r < threshold).sum())} of {len(r)} right ones")


if __name__ == "__main__":
    main()
