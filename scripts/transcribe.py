#!/usr/bin/env python
"""Transcribe audio files: prints one JSON object per file ({"audio": ..., "text": ...}).

Example: python scripts/transcribe.py --model runs/quickstart a.wav b.flac
Audio longer than --chunk-seconds is transcribed in overlapping windows; --decoder beam [--lm DIR]
decodes with CTC beam search and an n-gram LM; --tempos 0.875,0.9375,1,1.0625,1.125 decodes at several
speaking rates and keeps the transcript they agree on; --decoder choices --choices FILE picks the most
probable of a list of phrases (digits, commands; see docs/evaluation.md); --timestamps adds each word's
start and end in seconds and its confidence ({"audio": ..., "text": ..., "words": [{"word": ..., "start": ...,
"end": ..., "confidence": ...}]});
--subtitles DIR also writes DIR/<file name without suffix>.srt (or .vtt: --subtitle-format vtt) for each file.
--data SPEC transcribes every file of a folder, manifest or Hub dataset instead (each line with its confidence);
--manifest OUT.csv --min-confidence 0.8 then also writes the confident transcripts as a training manifest.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.audio import read_audio
from pipeline.cli import entry_point
from pipeline.config import DataSpec
from pipeline.errors import DataError, ModelError
from pipeline.evaluation.evaluate import (
    add_runtime_argument,
    build_transcriber,
    check_choices,
    load_model_dir,
    read_choices,
)
from pipeline.evaluation.labels import label_spec
from pipeline.evaluation.subtitles import FORMATS, cues, render, subtitle_files
from pipeline.evaluation.tempo import add_tempos_argument, parse_tempos
from pipeline.io import write_text


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (or Hub id)")
    p.add_argument("--batch-seconds", type=float, default=None,
                   help="padded audio seconds per batch (default: 30 on CPU, where cache-sized batches are fastest; 240 on GPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="batches transcribed at once on a CPU, each on its share of the threads (default: one per "
                        "torch thread for the models that allow it; 1: one batch at a time)")
    p.add_argument("--chunk-seconds", type=float, default=20.0,
                   help="transcribe audio longer than this in overlapping windows (0: never)")
    p.add_argument("--stride-seconds", type=float, default=None, help="context on each side of a window")
    p.add_argument("--decoder", choices=("greedy", "beam", "choices"), default="greedy")
    p.add_argument("--choices", help="with --decoder choices: a text file (one phrase a line) or data spec (its "
                                     "transcripts); each file is transcribed as the most probable of these phrases")
    p.add_argument("--lm", help="LM directory (scripts/build_lm.py); default with beam: the model's own, if any")
    p.add_argument("--beam-width", type=int, default=None)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--beta", type=float, default=None)
    add_tempos_argument(p)
    add_runtime_argument(p)
    p.add_argument("--timestamps", action="store_true",
                   help="add each word's start and end (seconds) and confidence (0-1) from the CTC output frames; any "
                        "decoder, one tempo (docs/evaluation.md)")
    p.add_argument("--subtitles", metavar="DIR",
                   help="write a subtitle file per audio file to DIR (its name with the format's suffix): word timestamps "
                        "grouped into cues of at most 42 characters and 6 seconds, split at pauses of a second")
    p.add_argument("--subtitle-format", choices=FORMATS, default="srt")
    p.add_argument("--data", help="transcribe every file of a data spec instead of AUDIO files: a folder (with or "
                                  "without metadata), a .csv/.jsonl manifest or a Hub dataset; read in blocks")
    p.add_argument("--manifest", metavar="OUT.csv",
                   help="with --data: also write a training manifest (audio, text, speaker, confidence) of the "
                        "transcripts (pseudo-labels) whose confidence (mean word confidence) is at least --min-confidence")
    p.add_argument("--min-confidence", type=float, default=0.0, help="with --manifest: the lowest confidence kept (0-1)")
    p.add_argument("audio", nargs="*", help="audio files (wav, flac, ogg, mp3)")
    a = p.parse_args()
    check_choices(a.decoder, a.choices)
    if bool(a.data) == bool(a.audio):
        raise ModelError("give AUDIO files or --data SPEC (one of the two)")
    if a.manifest and not a.data:
        raise ModelError("--manifest needs --data: it lists the transcripts of a data spec")
    if a.min_confidence and not a.manifest or not 0 <= a.min_confidence <= 1:
        raise ModelError("--min-confidence (0-1) chooses the transcripts --manifest keeps: give both")
    if a.data and (a.subtitles or a.tempos):
        raise ModelError(f"--data gives each transcript its confidence from one tempo's word timings and writes no "
                         f"subtitles: leave out {'--subtitles' if a.subtitles else '--tempos'}")
    timed = a.timestamps or a.subtitles
    if timed and a.tempos:
        raise ModelError(f"{'--timestamps' if a.timestamps else '--subtitles'} needs decoding at one tempo: "
                         f"leave out --tempos")
    subtitle_paths = subtitle_files(a.audio, a.subtitles, a.subtitle_format) if a.subtitles else {}
    model, fe, tok, meta = load_model_dir(a.model, runtime=a.runtime)
    phrases = read_choices(a.choices, meta.get("normalizer", "default"), a.decoder)
    transcriber, _ = build_transcriber(model, fe, tok, a.model, decoder=a.decoder, lm=a.lm, beam_width=a.beam_width,
                                       alpha=a.alpha, beta=a.beta, batch_seconds=a.batch_seconds,
                                       chunk_seconds=a.chunk_seconds, stride_seconds=a.stride_seconds,
                                       workers=a.workers, tempos=parse_tempos(a.tempos) if a.tempos else None,
                                       choices=phrases)
    if a.data:

        def show(row: dict) -> None:
            record = {k: row[k] for k in ("audio", "text", "confidence")} | ({"words": row["words"]} if a.timestamps else {})
            print(json.dumps(record, ensure_ascii=False), flush=True)

        summary = label_spec(transcriber, DataSpec(path=a.data), show, a.manifest, a.min_confidence)
        for item in summary["skipped"]:
            print(f"skipped {item['audio']}: {item['reason']}", file=sys.stderr)
        if a.manifest:
            print(f"{a.manifest}: {summary['kept']} of {summary['transcribed']} transcripts (confidence >= "
                  f"{a.min_confidence:g})", file=sys.stderr)
        return
    audios, names, failed = [], [], 0
    for path in a.audio:
        try:
            audios.append(read_audio(path, fe.sampling_rate)[0])
            names.append(path)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    results = transcriber.transcribe_words(audios) if timed else [{"text": t} for t in transcriber.transcribe(audios)]
    for name, result in zip(names, results, strict=True):
        record: dict = {"audio": name, **result}
        if a.subtitles:
            write_text(subtitle_paths[name], render(cues(result["words"]), a.subtitle_format))
            record["subtitles"] = str(subtitle_paths[name])
            if not a.timestamps:
                del record["words"]
        print(json.dumps(record, ensure_ascii=False), flush=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
