"""Data specs -> tables, audio reading/resampling, measuring (cached), filtering and the skip report."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import probe, read_audio
from pipeline.config import DataSpec
from pipeline.data import prepare as prepare_mod
from pipeline.data.prepare import SkipReport, measure, prepare_split
from pipeline.data.sources import load_spec
from pipeline.data.text import get_normalizer
from pipeline.errors import DataError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "asr" / "conformer_quickstart.yaml"
FSDD_TRAIN = REPO.parent / "shared" / "data" / "fsdd" / "train"


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav(path: Path, seconds: float = 0.5, sr: int = 16000, subtype: str = "PCM_16", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, sine(seconds, sr, **kw), sr, subtype=subtype)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def prepare(ds, cache: Path, report: SkipReport | None = None, on_bad_rows: str = "skip", **kw):
    opts = dict(normalize=get_normalizer("default"), min_duration=0.0, max_duration=20.0, need_text=True,
                on_bad_rows=on_bad_rows, cache_dir=cache)
    opts.update(kw)
    return prepare_split(ds, "train", "src", report if report is not None else SkipReport(), **opts)


# ------------------------------------------------------------------------------------------
# Data spec kinds


def test_audiofolder_with_metadata_csv(tmp_path: Path) -> None:
    for name in ("a.wav", "sub/b.wav"):
        wav(tmp_path / "f" / name)
    write_csv(tmp_path / "f" / "metadata.csv", ["file_name", "text", "speaker"],
              [["a.wav", "Hello there", "s1"], ["sub/b.wav", "General Kenobi", "s2"]])
    ds = load_spec(DataSpec(path=str(tmp_path / "f")))
    assert ds.column_names == ["audio", "text", "speaker", "row", "problem"]
    assert ds["audio"] == [str((tmp_path / "f" / "a.wav").resolve()), str((tmp_path / "f" / "sub" / "b.wav").resolve())]
    assert ds["text"] == ["Hello there", "General Kenobi"]
    assert ds["speaker"] == ["s1", "s2"] and ds["row"] == [1, 2] and ds["problem"] == ["", ""]
    # the split names a sub-folder; limit keeps the first rows
    assert len(load_spec(DataSpec(path=str(tmp_path), split="f", limit=1))) == 1


def test_audiofolder_with_metadata_jsonl_and_custom_columns(tmp_path: Path) -> None:
    wav(tmp_path / "a.wav")
    wav(tmp_path / "b.wav")
    write_jsonl(tmp_path / "metadata.jsonl", [
        {"file_name": "a.wav", "sentence": "one", "who": "x"},
        {"file_name": "b.wav", "sentence": "two", "who": "y"},
    ])
    ds = load_spec(DataSpec(path=str(tmp_path), text_column="sentence", speaker_column="who"))
    assert ds["text"] == ["one", "two"] and ds["speaker"] == ["x", "y"] and ds["problem"] == ["", ""]
    with pytest.raises(DataError, match="no column 'text'"):
        load_spec(DataSpec(path=str(tmp_path)))


def test_csv_manifest_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    wav(tmp_path / "audio" / "a.wav")
    wav(tmp_path / "audio" / "b.wav")
    manifest = write_csv(tmp_path / "lists" / "train.csv", ["path", "text"],
                         [["../audio/a.wav", "alpha"], [str(tmp_path / "audio" / "b.wav"), "beta"]])
    ds = load_spec(DataSpec(path=str(manifest)))
    assert ds["audio"] == [str((tmp_path / "audio" / "a.wav").resolve()), str((tmp_path / "audio" / "b.wav").resolve())]
    assert ds["text"] == ["alpha", "beta"] and ds["problem"] == ["", ""]
    assert ds["speaker"] == ["", ""]  # no speaker column


def test_jsonl_manifest(tmp_path: Path) -> None:
    wav(tmp_path / "x" / "a.wav")
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"audio_filepath": "x/a.wav", "text": "gamma", "speaker": 7}])
    manifest.write_text(manifest.read_text() + "\n{not json\n[1, 2]\n", encoding="utf-8")
    ds = load_spec(DataSpec(path=str(manifest)))
    assert ds["audio"][0] == str((tmp_path / "x" / "a.wav").resolve())
    assert ds["text"][0] == "gamma" and ds["speaker"][0] == "7"
    assert ds["problem"][0] == ""
    assert "not valid JSON" in ds["problem"][1] and "not a JSON object" in ds["problem"][2]
    with pytest.raises(DataError, match=r"\.csv or \.jsonl"):
        load_spec(DataSpec(path=str(wav(tmp_path / "x" / "a.wav"))))


def test_folder_without_metadata_is_unlabelled_audio(tmp_path: Path) -> None:
    wav(tmp_path / "b.wav")
    wav(tmp_path / "deep" / "a.flac")
    (tmp_path / "notes.txt").write_text("not audio")
    ds = load_spec(DataSpec(path=str(tmp_path)), need_text=False)
    assert sorted(ds["audio"]) == sorted(str(p.resolve()) for p in (tmp_path / "b.wav", tmp_path / "deep" / "a.flac"))
    assert ds["text"] == ["", ""] and ds["problem"] == ["", ""]
    out = prepare(ds, tmp_path / "cache", need_text=False)
    assert len(out) == 2 and all(d == pytest.approx(0.5) for d in out["duration"])
    with pytest.raises(DataError, match="no metadata.csv"):
        load_spec(DataSpec(path=str(tmp_path)))


def test_hub_name_offline_is_a_one_line_data_error() -> None:
    with pytest.raises(DataError) as exc:
        load_spec(DataSpec(path="someone-nonexistent/tiny-speech-set"))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("someone-nonexistent/tiny-speech-set:")
    with pytest.raises(DataError, match="no such file or folder"):
        load_spec(DataSpec(path="./does/not/exist"))


# ------------------------------------------------------------------------------------------
# Audio reading


def test_read_8k_mono_resamples_to_16k(tmp_path: Path) -> None:
    path = wav(tmp_path / "a.wav", seconds=1.0, sr=8000, freq=300, amp=0.5)
    audio, sr = read_audio(str(path), 16000)
    assert sr == 16000 and audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 16000
    expected = sine(1.0, 16000, freq=300, amp=0.5)
    mid = slice(1000, 15000)  # away from the filter's edges
    assert np.max(np.abs(audio[mid] - expected[mid])) < 0.01
    native, sr0 = read_audio(str(path))
    assert sr0 == 8000 and len(native) == 8000


@pytest.mark.parametrize("orig, new", [(8000, 16000), (44100, 16000), (16000, 22050)])
def test_resampling_equals_torchaudio_functional(orig: int, new: int) -> None:
    """The cached resampler (its kernel built once per pair of rates) gives functional.resample's samples exactly."""
    import torch
    import torchaudio.functional as AF

    from pipeline.audio import resample

    x = np.random.default_rng(0).standard_normal(4410).astype(np.float32)
    for _ in range(2):  # the second call reuses the kernel
        np.testing.assert_array_equal(resample(x, orig, new), AF.resample(torch.from_numpy(x), orig, new).numpy())


def test_read_44k_stereo_is_channel_average_and_resampled(tmp_path: Path) -> None:
    sr = 44100
    left, right = sine(1.0, sr, freq=440, amp=0.6), sine(1.0, sr, freq=440, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    native, sr0 = read_audio(str(path))
    assert sr0 == sr and native.ndim == 1
    np.testing.assert_allclose(native, (left + right) / 2, atol=1e-7)
    audio, sr1 = read_audio(str(path), 16000)
    assert sr1 == 16000 and len(audio) == 16000
    expected = sine(1.0, 16000, freq=440, amp=0.4)
    assert np.max(np.abs(audio[1000:15000] - expected[1000:15000])) < 0.01
    info = probe(str(path))
    assert info.channels == 2 and info.sample_rate == sr and info.duration == pytest.approx(1.0)


@pytest.mark.parametrize("subtype, atol", [("PCM_16", 1 / 2**15), ("PCM_24", 1 / 2**23), ("FLOAT", 1e-7)])
def test_wav_subtypes_read_exactly(tmp_path: Path, subtype: str, atol: float) -> None:
    path = wav(tmp_path / f"{subtype}.wav", seconds=0.25, sr=16000, subtype=subtype, amp=0.7)
    assert sf.info(path).subtype == subtype
    audio, sr = read_audio(str(path), 16000)
    assert sr == 16000 and len(audio) == 4000
    np.testing.assert_allclose(audio, sine(0.25, 16000, amp=0.7), atol=atol)


@pytest.mark.parametrize("fmt, subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("OGG", "OPUS")])
def test_compressed_formats_read(tmp_path: Path, fmt: str, subtype: str) -> None:
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    sr = 48000 if subtype == "OPUS" else 16000
    path = tmp_path / f"a.{fmt.lower()}"
    ref = sine(1.0, sr, freq=440, amp=0.5)
    try:
        sf.write(path, ref, sr, format=fmt, subtype=subtype)
    except sf.LibsndfileError as exc:
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}: {exc}")
    audio, got_sr = read_audio(str(path), 16000)
    assert got_sr == 16000 and abs(len(audio) - 16000) <= 16
    ref16 = sine(len(audio) / 16000, 16000, freq=440, amp=0.5)
    corr = np.corrcoef(audio[2000:14000], ref16[2000:14000])[0, 1]
    if fmt == "FLAC":
        np.testing.assert_allclose(audio, ref16, atol=1e-3)
    else:
        assert corr > 0.9, corr  # lossy, and codecs may delay the signal a little
    info = probe(str(path))
    assert info.sample_rate == sr and info.duration == pytest.approx(1.0, abs=0.02)


def test_fsdd_subset_loads_and_measures_at_8k(tmp_path: Path) -> None:
    if not (FSDD_TRAIN / "metadata.csv").is_file():
        pytest.skip(f"the FSDD folder is absent ({FSDD_TRAIN})")
    ds = load_spec(DataSpec(path=str(FSDD_TRAIN), limit=4))
    assert len(ds) == 4 and all(ds["problem"][i] == "" for i in range(4))
    assert all(t in {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"} for t in ds["text"])
    out = prepare(ds, tmp_path / "cache")
    assert len(out) == 4 and set(out["sample_rate"]) == {8000}
    for path, duration in zip(out["audio"], out["duration"], strict=True):
        info = sf.info(path)
        assert duration == pytest.approx(info.frames / 8000)
        audio, sr = read_audio(path, 16000)
        assert sr == 16000 and len(audio) == 2 * info.frames
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01


# ------------------------------------------------------------------------------------------
# Vocabulary


def test_vocabulary_comes_from_the_train_split_only(tiny_corpus: Path, tmp_path: Path, run_script,
                                                    tiny_recipe_overrides) -> None:
    with open(tiny_corpus / "train" / "metadata.csv", encoding="utf-8") as f:
        train_rows = [r for r in csv.DictReader(f) if not set(r["text"]) & set("qz")]
    with open(tiny_corpus / "test" / "metadata.csv", encoding="utf-8") as f:
        test_rows = list(csv.DictReader(f))[:4]
    assert len(train_rows) >= 10
    train_csv = write_csv(tmp_path / "train.csv", ["path", "text"],
                          [[str(tiny_corpus / "train" / r["file_name"]), r["text"]] for r in train_rows])
    eval_csv = write_csv(tmp_path / "eval.csv", ["path", "text"],
                         [[str(tiny_corpus / "test" / r["file_name"]), f"Quiz 7 {r['text']}"] for r in test_rows])
    out = tmp_path / "model"
    proc = run_script("train.py", str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"output_dir={out}",
                      f"data.train={train_csv}", f"data.eval={eval_csv}", "train.max_steps=1",
                      "train.batch_seconds=10", "train.eval_every=1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    norm = get_normalizer("default")
    train_chars = {ch for r in train_rows for ch in norm(r["text"]) if ch != " "}
    assert set(vocab) - {"<pad>", "<unk>", "|"} == train_chars
    assert not {"q", "z", "7"} & set(vocab)
    assert vocab["<pad>"] == len(vocab) - 1  # Parakeet: the blank comes last
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["splits"]["eval"]["kept"] == 4  # evaluation text is scored, not filtered, by the vocabulary


# ------------------------------------------------------------------------------------------
# Measuring, caching and filtering


def test_durations_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav(tmp_path / "f" / "a.wav", seconds=0.5)
    wav(tmp_path / "f" / "b.wav", seconds=1.25, sr=8000)
    write_csv(tmp_path / "f" / "metadata.csv", ["file_name", "text"], [["a.wav", "a"], ["b.wav", "b"]])
    cache = tmp_path / "cache"
    first = measure(load_spec(DataSpec(path=str(tmp_path / "f"))), cache)
    files = sorted(cache.glob("probe-*.arrow"))
    assert len(files) == 1
    assert first["duration"] == [0.5, 1.25] and first["sample_rate"] == [16000, 8000]

    def no_probe(*args, **kwargs):
        raise AssertionError("audio was measured again instead of loaded from the cache")

    monkeypatch.setattr(prepare_mod, "probe", no_probe)
    second = measure(load_spec(DataSpec(path=str(tmp_path / "f"))), cache)
    assert second.to_dict() == first.to_dict()
    assert sorted(cache.glob("probe-*.arrow")) == files
    monkeypatch.undo()

    # the cache holds measurements only: edited transcripts are never replaced by cached ones
    write_csv(tmp_path / "f" / "metadata.csv", ["file_name", "text"], [["a.wav", "edited"], ["b.wav", "text"]])
    third = measure(load_spec(DataSpec(path=str(tmp_path / "f"))), cache)
    assert third["text"] == ["edited", "text"] and third["duration"] == [0.5, 1.25]

    # a changed file is measured again
    wav(tmp_path / "f" / "a.wav", seconds=0.75)
    fourth = measure(load_spec(DataSpec(path=str(tmp_path / "f"))), cache)
    assert fourth["duration"] == [0.75, 1.25]


def test_duration_filters_skip_and_report(tmp_path: Path) -> None:
    rows = []
    for name, seconds in (("short", 0.1), ("ok", 1.0), ("long", 3.0)):
        wav(tmp_path / "f" / f"{name}.wav", seconds=seconds)
        rows.append([f"{name}.wav", name])
    write_csv(tmp_path / "f" / "metadata.csv", ["file_name", "text"], rows)
    report = SkipReport()
    out = prepare(load_spec(DataSpec(path=str(tmp_path / "f"))), tmp_path / "cache", report,
                  min_duration=0.3, max_duration=2.0)
    assert out["text"] == ["ok"] and out["duration"] == [1.0]
    reasons = {Path(s["audio"]).name: s["reason"] for s in report.skipped}
    assert reasons["short.wav"].startswith("too short") and reasons["long.wav"].startswith("too long")
    assert {s["row"] for s in report.skipped} == {1, 3}
    split = report.splits["train"]
    assert split["rows"] == 3 and split["kept"] == 1 and split["skipped"] == 2
    assert split["skipped_by_reason"] == {"too short": 1, "too long": 1}
    report.write(tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["splits"]["train"]["kept"] == 1
    with pytest.raises(DataError, match=r"src row 1 \(.*short\.wav\): too short"):
        prepare(load_spec(DataSpec(path=str(tmp_path / "f"))), tmp_path / "cache", on_bad_rows="error",
                min_duration=0.3, max_duration=2.0)


def _bad_folder(root: Path) -> tuple[Path, dict[str, str]]:
    """A folder whose metadata names one good file and one of each kind of unusable row."""
    folder = root / "bad"
    wav(folder / "good.wav")
    wav(folder / "good2.wav")
    wav(folder / "good3.wav")
    (folder / "empty.wav").write_bytes(b"")
    good = (folder / "good.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(good[:30])  # the 44-byte header is cut short
    (folder / "text.wav").write_text("this is not audio at all\n" * 20)
    sf.write(folder / "nan.wav", np.array([0.1, np.nan, 0.2] * 1000, dtype=np.float32), 16000, subtype="FLOAT")
    wav(root / "outside.wav")
    rows = [
        ["good.wav", "a good row"],
        ["missing.wav", "missing file"],
        ["empty.wav", "zero bytes"],
        ["truncated.wav", "cut header"],
        ["text.wav", "renamed text"],
        ["nan.wav", "not a number"],
        ["good2.wav", ""],
        ["good3.wav", "?!"],
        ["good.wav", "the same file again"],
        ["../outside.wav", "escapes"],
    ]
    write_csv(folder / "metadata.csv", ["file_name", "text"], rows)
    expected = {  # file name -> start of the reason
        "missing.wav": "missing audio file",
        "empty.wav": "cannot read audio",
        "truncated.wav": "cannot read audio",
        "text.wav": "cannot read audio",
        "nan.wav": "audio holds NaN",
        "outside.wav": "path '../outside.wav' points outside",
    }
    return folder, expected


def test_bad_rows_are_skipped_with_named_reasons(tmp_path: Path) -> None:
    folder, expected = _bad_folder(tmp_path)
    report = SkipReport()
    out = prepare(load_spec(DataSpec(path=str(folder))), tmp_path / "cache", report)
    assert out["text"] == ["a good row"]
    by_row = {s["row"]: s for s in report.skipped}
    assert sorted(by_row) == list(range(2, 11))
    for row in (2, 3, 4, 5, 6, 10):
        name = Path(by_row[row]["audio"]).name
        assert by_row[row]["reason"].startswith(expected[name]), (name, by_row[row]["reason"])
    assert by_row[7]["reason"] == "empty transcript"
    assert by_row[8]["reason"].startswith("transcript empty after normalisation")
    assert by_row[9]["reason"] == "duplicate of row 1"
    assert report.splits["train"]["skipped"] == 9 and report.count("train") == 9


@pytest.mark.parametrize("row", range(2, 11))
def test_each_bad_row_is_fatal_with_on_bad_rows_error(tmp_path: Path, row: int) -> None:
    folder, _ = _bad_folder(tmp_path)
    with open(folder / "metadata.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    write_csv(folder / "metadata.csv", rows[0], [rows[1], rows[row]])  # row 9 duplicates row 1
    with pytest.raises(DataError) as exc:
        prepare(load_spec(DataSpec(path=str(folder))), tmp_path / "cache", on_bad_rows="error")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("src row 2 (")
    assert Path(rows[row][0]).name in msg


def test_missing_text_column_names_file_and_column(tmp_path: Path) -> None:
    wav(tmp_path / "a.wav")
    meta = write_csv(tmp_path / "metadata.csv", ["file_name", "transcript"], [["a.wav", "hi"]])
    with pytest.raises(DataError) as exc:
        load_spec(DataSpec(path=str(tmp_path)))
    msg = str(exc.value)
    assert str(meta) in msg and "'text'" in msg and "transcript" in msg and "\n" not in msg
    # unlabelled use does not need it
    assert load_spec(DataSpec(path=str(tmp_path)), need_text=False)["text"] == [""]


def test_empty_metadata_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("")
    with pytest.raises(DataError, match="empty CSV"):
        load_spec(DataSpec(path=str(tmp_path)))
    (tmp_path / "metadata.csv").write_text("file_name,text\n")
    with pytest.raises(DataError, match="no rows"):
        load_spec(DataSpec(path=str(tmp_path)))


def test_non_utf8_metadata_is_read_as_cp1252(tmp_path: Path) -> None:
    wav(tmp_path / "a.wav")
    wav(tmp_path / "b.wav")
    write_csv(tmp_path / "metadata.csv", ["file_name", "text"], [["a.wav", "café naïve"], ["b.wav", "l’été – “quoted”"]],
              encoding="cp1252")
    with pytest.raises(UnicodeDecodeError):
        (tmp_path / "metadata.csv").read_text(encoding="utf-8")
    ds = load_spec(DataSpec(path=str(tmp_path)))
    assert ds["text"] == ["café naïve", "l’été – “quoted”"]
    out = prepare(ds, tmp_path / "cache")
    assert out["text"] == ["café naïve", "l'été quoted"]


def test_utf8_bom_metadata(tmp_path: Path) -> None:
    wav(tmp_path / "a.wav")
    (tmp_path / "metadata.csv").write_bytes("file_name,text\na.wav,über\n".encode("utf-8-sig"))
    ds = load_spec(DataSpec(path=str(tmp_path)))
    assert ds["text"] == ["über"] and ds["problem"] == [""]


def test_changed_file_after_measuring_is_skipped_not_fatal(tmp_path: Path) -> None:
    """read_audio names the file when it cannot be decoded (training skips such rows)."""
    path = wav(tmp_path / "a.wav")
    shutil.copy(path, tmp_path / "b.wav")
    (tmp_path / "b.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match=r"b\.wav: cannot read audio"):
        read_audio(str(tmp_path / "b.wav"), 16000)
