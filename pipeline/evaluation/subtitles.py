"""Subtitles (SubRip `.srt`, WebVTT `.vtt`) from word timestamps (`timestamps.Timed`).

Words are grouped into cues the way subtitle guidelines ask: at most `max_chars` characters (42, one line of
the common broadcast limit), at most `max_seconds` on screen, and a new cue after a pause of `max_gap`
seconds, so a cue never spans a silence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from pipeline.errors import DataError
from pipeline.evaluation.timestamps import Word

FORMATS = ("srt", "vtt")


class Cue(TypedDict):
    start: float
    end: float
    text: str


def cues(words: Sequence[Word], max_chars: int = 42, max_seconds: float = 6.0, max_gap: float = 1.0) -> list[Cue]:
    """Consecutive words joined into cues within the limits (a single longer word is a cue of its own)."""
    out: list[Cue] = []
    for w in words:
        last = out[-1] if out else None
        if (last is not None and len(last["text"]) + 1 + len(w["word"]) <= max_chars
                and w["end"] - last["start"] <= max_seconds and w["start"] - last["end"] <= max_gap):
            last["text"] += " " + w["word"]
            last["end"] = w["end"]
        else:
            out.append({"start": w["start"], "end": w["end"], "text": w["word"]})
    return out


def clock(seconds: float, decimal: str) -> str:
    """HH:MM:SS,mmm (SubRip) or HH:MM:SS.mmm (WebVTT)."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def render(cue_list: Sequence[Cue], fmt: str) -> str:
    """The subtitle file's text: numbered SubRip blocks, or a WebVTT file."""
    if fmt == "srt":
        blocks = [f"{i}\n{clock(c['start'], ',')} --> {clock(c['end'], ',')}\n{c['text']}\n"
                  for i, c in enumerate(cue_list, 1)]
        return "\n".join(blocks)
    if fmt == "vtt":
        blocks = [f"{clock(c['start'], '.')} --> {clock(c['end'], '.')}\n{c['text']}\n" for c in cue_list]
        return "\n".join(["WEBVTT\n", *blocks])
    raise ValueError(f"subtitle format {fmt!r}: choose {' or '.join(FORMATS)}")


def subtitle_files(audio: list[str], folder: str, fmt: str) -> dict[str, Path]:
    """Each audio file's subtitle path in `folder`; two files of the same name are a one-line error."""
    out: dict[str, Path] = {}
    by_name: dict[str, str] = {}
    for path in audio:
        name = Path(path).stem
        if by_name.setdefault(name, path) != path:
            raise DataError(f"--subtitles: {by_name[name]} and {path} would both write {name}.{fmt}")
        out[path] = Path(folder) / f"{name}.{fmt}"
    Path(folder).mkdir(parents=True, exist_ok=True)
    return out
