"""Data specs -> `datasets.Dataset` tables with one row per utterance.

A spec is a folder in audiofolder layout (`metadata.csv`/`metadata.jsonl` with `file_name`,
`text`, optional `speaker`), a `.csv`/`.jsonl` manifest whose audio paths are relative to the
manifest, a folder of audio files without metadata (unlabelled audio), or a Hub dataset (online).
Audio stays a path string (or, for Hub parquet data, undecoded bytes): it is read with soundfile
later, never through torchcodec/FFmpeg.

Every table has the columns `audio`, `text`, `speaker`, `row` (1-based row in the source, for
reports), and `problem` (non-empty when the row is already known to be unusable).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import datasets

from pipeline.config import DataSpec
from pipeline.errors import DataError

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".oga"}
METADATA_NAMES = ("metadata.csv", "metadata.jsonl")


def _decode_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        logger.warning("%s is not UTF-8 (byte 0x%02x at offset %d); reading it as cp1252", path, raw[exc.start], exc.start)
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV or JSON-lines file as dictionaries (a bad JSON line becomes a row with a problem)."""
    text = _decode_text(path)
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise DataError(f"{path}: empty CSV (no header row)")
        return [dict(r) for r in reader]
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append({"__problem__": f"line {i} is not valid JSON ({exc.msg})"})
            continue
        if not isinstance(obj, dict):
            rows.append({"__problem__": f"line {i} is not a JSON object"})
            continue
        rows.append(obj)
    return rows


def _pick(columns: set[str], wanted: str | None, candidates: tuple[str, ...], where: str, role: str) -> str:
    if wanted:
        if wanted not in columns:
            raise DataError(f"{where}: no column {wanted!r} for the {role} (columns: {', '.join(sorted(columns)) or 'none'})")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"{where}: no {role} column (looked for {', '.join(candidates)}; columns: {', '.join(sorted(columns)) or 'none'})")


def _from_rows(
    rows: list[dict[str, Any]],
    base: Path,
    where: Path,
    spec: DataSpec,
    need_text: bool,
    confine: bool,
) -> datasets.Dataset:
    columns = set().union(*(r.keys() for r in rows)) - {"__problem__"} if rows else set()
    if not rows:
        raise DataError(f"{where}: no rows")
    audio_col = _pick(columns, spec.audio_column, ("file_name", "audio", "path", "audio_filepath", "wav"), str(where), "audio path")
    text_col = None
    if need_text:
        text_col = _pick(columns, spec.text_column, ("text",), str(where), "transcript")
    elif spec.text_column in columns:
        text_col = spec.text_column
    speaker_col = spec.speaker_column if spec.speaker_column in columns else None
    base_resolved = base.resolve()
    out: dict[str, list[Any]] = {"audio": [], "text": [], "speaker": [], "row": [], "problem": []}
    seen: dict[str, int] = {}
    for i, r in enumerate(rows, start=1):
        problem = r.get("__problem__", "")
        rel = r.get(audio_col)
        audio = ""
        if not problem:
            if rel is None or str(rel).strip() == "":
                problem = f"empty {audio_col!r}"
            else:
                p = Path(str(rel).strip())
                full = (p if p.is_absolute() else base / p).resolve()
                audio = str(full)
                if confine and not full.is_relative_to(base_resolved):
                    problem = f"path {str(rel)!r} points outside {base}"
                elif audio in seen:
                    problem = f"duplicate of row {seen[audio]}"
                elif not full.is_file():
                    problem = f"missing audio file {str(rel)!r}"
                else:
                    seen[audio] = i
        text = r.get(text_col) if text_col else ""
        out["audio"].append(audio)
        out["text"].append("" if text is None else str(text))
        out["speaker"].append(str(r.get(speaker_col) or "") if speaker_col else "")
        out["row"].append(i)
        out["problem"].append(problem)
    return datasets.Dataset.from_dict(out)


def _audio_folder_without_metadata(folder: Path) -> datasets.Dataset:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no metadata.csv/metadata.jsonl and no audio files")
    n = len(files)
    return datasets.Dataset.from_dict(
        {"audio": [str(p.resolve()) for p in files], "text": [""] * n, "speaker": [""] * n,
         "row": list(range(1, n + 1)), "problem": [""] * n}
    )


def _hub(spec: DataSpec, need_text: bool) -> datasets.Dataset:
    try:
        ds = datasets.load_dataset(spec.path, spec.config, split=spec.split or "train")
    except Exception as exc:  # offline, unknown name, missing config...
        raise DataError(f"{spec.path}: not a local folder or manifest, and loading it from the Hub failed ({str(exc).splitlines()[0]})") from None
    columns = set(ds.column_names)
    audio_col = _pick(columns, spec.audio_column, ("audio", "file", "path"), spec.path, "audio")
    ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
    text_col = _pick(columns, spec.text_column, ("text", "sentence", "transcription"), spec.path, "transcript") if need_text else None
    speaker_col = spec.speaker_column if spec.speaker_column in columns else None

    def convert(batch: dict[str, list[Any]], idx: list[int]) -> dict[str, list[Any]]:
        n = len(idx)
        return {
            "audio_ref": batch[audio_col],
            "text": [str(t) for t in batch[text_col]] if text_col else [""] * n,
            "speaker": [str(s) for s in batch[speaker_col]] if speaker_col else [""] * n,
            "row": [i + 1 for i in idx],
            "problem": [""] * n,
        }

    ds = ds.map(convert, batched=True, with_indices=True, remove_columns=ds.column_names)
    return ds.rename_column("audio_ref", "audio")


def load_spec(spec: DataSpec, need_text: bool = True) -> datasets.Dataset:
    """Read a data spec into a table (not yet measured or filtered: see `pipeline.data.prepare`)."""
    path = Path(os.path.expanduser(spec.path))
    if path.is_dir():
        if spec.split and (path / spec.split).is_dir():
            path = path / spec.split
        meta = next((path / n for n in METADATA_NAMES if (path / n).is_file()), None)
        if meta is None:
            if need_text:
                raise DataError(f"{path}: no metadata.csv or metadata.jsonl (columns file_name,text[,speaker])")
            ds = _audio_folder_without_metadata(path)
        else:
            ds = _from_rows(read_table(meta), path, meta, spec, need_text, confine=True)
    elif path.is_file():
        if path.suffix not in (".csv", ".jsonl", ".json"):
            raise DataError(f"{path}: a manifest must be .csv or .jsonl")
        ds = _from_rows(read_table(path), path.parent, path, spec, need_text, confine=False)
    elif spec.path.startswith((".", "/", "~")) or os.sep in spec.path.strip("/").split("/", 1)[-1]:
        raise DataError(f"{spec.path}: no such file or folder")
    else:
        ds = _hub(spec, need_text)
    if spec.limit is not None:
        ds = ds.select(range(min(spec.limit, len(ds))))
    return ds


def describe_spec(spec: DataSpec) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in (("config", spec.config), ("split", spec.split)) if v)
    return spec.path + (f" ({extra})" if extra else "")


def read_sentences(text: str | Path, normalize: Any, split: str | None = None, config: str | None = None,
                   text_column: str = "text") -> list[str]:
    """Normalised non-empty sentences of a plain text file (one a line) or of a data spec's transcripts
    (a folder, a .csv/.jsonl manifest, a Hub dataset): an LM's training text, a list of phrases."""
    path = Path(text).expanduser()
    if path.is_file() and path.suffix not in (".csv", ".jsonl", ".json"):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
        return [s for s in (normalize(line) for line in lines) if s]
    table = load_spec(DataSpec(path=str(text), split=split, config=config, text_column=text_column), need_text=True)
    return [s for s in (normalize(t or "") for t in table["text"]) if s]
