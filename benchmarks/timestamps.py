#!/usr/bin/env python
"""Word timestamp accuracy: ours (`scripts/transcribe.py --timestamps`) vs `transformers.pipeline(return_timestamps="word")`.

Ground truth comes from the synthesiser itself: the held-out test utterances of a synthetic corpus
(`scripts/synth_corpus.py`; its `corpus.json` fixes every text, voice, rate and pitch) are synthesised
again here with espeak-ng, which reports where each phoneme starts and ends. A word's true span runs from
the start of its first phoneme to the end of its last (pauses excluded); the audio goes through the corpus's
own post-processing, so it is what the corpus holds.

Both transcribe the same waveforms with the same model (greedy CTC, one utterance at a time for the pipeline).
Ours is scored twice: the spans of the output frames as they are (what the pipeline computes, at the right
frame rate) and as `--timestamps` reports them, less the model's emission lag and within the speech
(`pipeline.evaluation.timestamps.settle`). Their words are aligned to the reference words (the Levenshtein alignment behind WER, after the
model's normaliser) and only correctly recognised words are scored: hypothesis − truth of each word's start
and end, in milliseconds (the median of its size, and the mean of the start's sign: > 0 is late). The last column
is the pipeline's median start error divided by ours.

Under the table: how well each word's `confidence` tells right words from wrong ones (AUROC over all recognised
words, and the share right in bins of confidence: a calibrated confidence of 0.6 is right 60% of the time).

  python benchmarks/timestamps.py --model runs/quickstart                  # data/synth, 50 utterances
  python benchmarks/timestamps.py --model runs/quickstart --corpus data/synth --limit 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import print_report  # noqa: E402

from pipeline.data.text import get_normalizer  # noqa: E402
from pipeline.evaluation.alignment import DEL, HIT, INS, align_words  # noqa: E402
from pipeline.synth import corpus, espeak  # noqa: E402
from pipeline.tts.alignment import group_by_word  # noqa: E402

Span = tuple[float, float]


def true_words(syn: espeak.Synthesis, shift: int) -> list[Span]:
    """(start, end) seconds of each word in the post-processed audio: its phonemes' span, pauses left out (a
    phoneme belongs to the last word whose start event is at or before it, as the CTC aligner of TTS groups them)."""
    spans = []
    for group in group_by_word(syn.phonemes, syn.words):
        said = [(s, e) for name, s, e in group if not name.startswith("_") and e > s]
        if said:
            spans.append(((said[0][0] + shift) / syn.sample_rate, (said[-1][1] + shift) / syn.sample_rate))
    return spans


def scored_errors(reference: str, words: list[tuple[str, float, float]], truth: list[Span]) -> list[tuple[float, float]]:
    """(start error, end error) in ms of each correctly recognised word: hypothesis − truth (> 0: late)."""
    ops = align_words(reference, " ".join(w for w, _, _ in words))
    out, r, h = [], 0, 0
    for op, _, _ in ops:
        if op == HIT:
            _, s, e = words[h]
            out.append(((s - truth[r][0]) * 1000, (e - truth[r][1]) * 1000))
        r += op != INS
        h += op != DEL
    return out


def summary(name: str, errors: list[tuple[float, float]], ref_words: int, reference_median: float | None) -> str:
    if not errors:
        return f"| {name} | 0 of {ref_words} | – | – | – | – | – | – |"
    starts, ends = [abs(e[0]) for e in errors], [abs(e[1]) for e in errors]
    med = statistics.median(starts)
    ratio = f"**{reference_median / med:.1f}×**" if reference_median is not None and med > 0 else "1.0× (reference)"
    within = sum(s <= 50 for s in starts) / len(starts) * 100
    bias = statistics.fmean(e[0] for e in errors), statistics.fmean(e[1] for e in errors)
    return (f"| {name} | {len(errors)} of {ref_words} | {med:.0f} | {bias[0]:+.0f} | {within:.0f}% | "
            f"{statistics.median(ends):.0f} | {bias[1]:+.0f} | {ratio} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a saved CTC model directory (scripts/train.py output)")
    ap.add_argument("--corpus", default="data/synth", help="a synthetic corpus folder with corpus.json")
    ap.add_argument("--limit", type=int, default=50, help="test utterances to synthesise and score")
    a = ap.parse_args()

    import torch
    from transformers import pipeline as hf_pipeline

    from pipeline.evaluation.evaluate import build_transcriber, load_model_dir

    load0 = os.getloadavg()[0]
    params = json.loads(Path(a.corpus, "corpus.json").read_text(encoding="utf-8"))["params"]
    jobs, _ = corpus.plan(params["n_train"], params["n_test"], params["seed"])
    jobs = [j for j in jobs if j.split == "test"][: a.limit]
    sr = int(params["sample_rate"])
    audios, truths = [], []
    for job in jobs:
        syn = espeak.synthesize(job.text, job.voice, rate=job.rate, pitch=job.pitch, pitch_range=job.pitch_range)
        audio, shift = corpus.postprocess_with_shift(syn.audio, syn.sample_rate, sr)
        audios.append(audio)
        truths.append(true_words(syn, shift))

    model, fe, tok, meta = load_model_dir(a.model)
    normalize = get_normalizer(meta.get("normalizer", "default"))
    refs = [normalize(j.text) for j in jobs]
    usable = [i for i, (r, t) in enumerate(zip(refs, truths, strict=True)) if len(r.split()) == len(t)]
    transcriber, _ = build_transcriber(model, fe, tok, a.model, chunk_seconds=0)
    ours = transcriber.transcribe_words([audios[i] for i in usable])
    frames_only = transcriber.transcribe_words([audios[i] for i in usable], on_speech=False)
    asr = hf_pipeline("automatic-speech-recognition", model=a.model, device=-1)
    with torch.inference_mode():
        theirs = [asr({"raw": audios[i].astype(np.float32), "sampling_rate": sr}, return_timestamps="word")
                  for i in usable]
    load1 = os.getloadavg()[0]

    def errors(per_utt: list[list[tuple[str, float, float]]]) -> list[tuple[float, float]]:
        return [e for i, words in zip(usable, per_utt, strict=True) for e in scored_errors(refs[i], words, truths[i])]

    def ours_errors(results: list[Any]) -> list[tuple[float, float]]:
        return errors([[(normalize(w["word"]), w["start"], w["end"]) for w in r["words"]] for r in results])

    theirs_err = errors([[(normalize(c["text"]), float(c["timestamp"][0]), float(c["timestamp"][1])) for c in r["chunks"]]
                         for r in theirs])
    n_words = sum(len(refs[i].split()) for i in usable)
    frame = transcriber.frame_seconds() * 1000
    reference_median = statistics.median(abs(e[0]) for e in theirs_err) if theirs_err else None
    notes = [f"model: {a.model} ({type(model).__name__}, output frames of {frame:g} ms)",
             f"data: {len(usable)} held-out test utterances of {a.corpus} re-synthesised with espeak-ng {espeak.version()} "
             f"({len(jobs) - len(usable)} left out: espeak's word events did not match the normalised text)",
             "errors in ms against espeak's phoneme boundaries, over the correctly recognised words only"]
    rows = [summary("transformers.pipeline(return_timestamps=\"word\")", theirs_err, n_words, None),
            summary("ours, the output frames' own spans (`on_speech=False`)", ours_errors(frames_only), n_words,
                    reference_median),
            summary("ours, lag taken off, on the speech (`transcribe.py --timestamps`)", ours_errors(ours), n_words,
                    reference_median)]
    print_report(torch.get_num_threads(), load0, load1, notes,
                 ["arm", "words scored", "start error, median size (ms)", "start bias, mean (ms)", "starts within 50 ms",
                  "end error, median size (ms)", "end bias, mean (ms)", "pipeline / ours (median start error)"],
                 rows, "nothing measured here depends on it")
    print_confidence([r["words"] for r in ours], [refs[i] for i in usable], normalize)


def right_words(reference: str, hypothesis_words: list[str]) -> list[bool]:
    """Whether each hypothesis word is a hit of the Levenshtein alignment to the reference."""
    return [op == HIT for op, _, _ in align_words(reference, " ".join(hypothesis_words)) if op != DEL]


def print_confidence(words: list[list[Any]], refs: list[str], normalize: Any) -> None:
    """How well the words' `confidence` tells right from wrong: AUROC, and the share right per confidence bin."""
    from scipy.stats import rankdata

    conf, right = [], []
    for ws, ref in zip(words, refs, strict=True):
        right += right_words(ref, [normalize(w["word"]) for w in ws])
        conf += [w["confidence"] for w in ws]
    y, x = np.array(right), np.array(conf)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    auroc = (rankdata(x)[y].sum() - pos * (pos + 1) / 2) / (pos * neg) if pos and neg else float("nan")
    print(f"\nword confidence (`--timestamps`): {len(y)} recognised words, {pos} right; "
          f"AUROC of confidence for right vs wrong {auroc:.3f}")
    print("| confidence | words | mean confidence | share right |\n|---|---|---|---|")
    for lo, hi in ((0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)):
        m = (x >= lo) & (x < hi)
        if m.any():
            print(f"| {lo:.1f}–{min(hi, 1.0):.1f} | {int(m.sum())} | {x[m].mean():.3f} | {y[m].mean():.1%} |")


if __name__ == "__main__":
    main()
