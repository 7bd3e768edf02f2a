"""A real `scripts/train.py` run -> a model directory that transformers, evaluate.py and transcribe.py agree on."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import jiwer
import pytest
import soundfile as sf
from conftest import lone_pass_texts

from pipeline.data.text import get_normalizer

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "asr" / "conformer_quickstart.yaml"

EXPECTED_FILES = [
    "model.safetensors", "config.json", "vocab.json", "tokenizer_config.json", "preprocessor_config.json",
    "README.md", "training_curves.png", "train_log.jsonl", "data_report.json", "speech_pipeline.json",
    "recipe.yaml", "train_results.json",
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def evaluation(trained_tiny_model: Path, tiny_corpus: Path, run_script, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("evaluation")
    proc = run_script("evaluate.py", "--model", trained_tiny_model, "--data", tiny_corpus / "test", "--output", out,
                      "--batch-seconds", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_model_directory_is_complete(trained_tiny_model: Path) -> None:
    for name in EXPECTED_FILES:
        assert (trained_tiny_model / name).is_file(), f"{name} missing from {sorted(p.name for p in trained_tiny_model.iterdir())}"
        assert (trained_tiny_model / name).stat().st_size > 0, name
    umask = os.umask(0o022)
    os.umask(umask)
    # files the pipeline writes atomically are readable like any other file of this user, not private
    # (model.safetensors is left out: the safetensors writer itself makes it 0600)
    for name in ("README.md", "data_report.json", "speech_pipeline.json", "recipe.yaml", "train_results.json"):
        mode = stat.S_IMODE((trained_tiny_model / name).stat().st_mode)
        assert mode & 0o444 == 0o444 & ~umask, (name, oct(mode))
    assert (trained_tiny_model / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((trained_tiny_model / "config.json").read_text())
    vocab = json.loads((trained_tiny_model / "vocab.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "parakeet_ctc"
    assert config["vocab_size"] == len(vocab) and config["pad_token_id"] == vocab["<pad>"]
    assert json.loads((trained_tiny_model / "speech_pipeline.json").read_text())["normalizer"] == "default"
    card = (trained_tiny_model / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "pipeline_tag: automatic-speech-recognition" in card
    assert "## Recipe" in card and "parakeet" in card
    log = read_jsonl(trained_tiny_model / "train_log.jsonl")
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6, 8]
    assert any("eval_wer" in r for r in log)
    report = json.loads((trained_tiny_model / "data_report.json").read_text())
    assert report["splits"]["train"]["kept"] == 40 and report["splits"]["eval"]["kept"] == 12
    results = json.loads((trained_tiny_model / "train_results.json").read_text())
    assert results["steps"] == 8 and results["stop_reason"] == "max_steps"
    assert results["machine"]["device"] == "cpu" and results["machine"]["cpu"]  # minutes mean little without it
    assert f"Machine: CPU, {results['machine']['torch_threads']} torch threads" in (trained_tiny_model / "README.md").read_text()
    assert sorted(p.name for p in (trained_tiny_model / "checkpoints").iterdir()) == ["step-00000004", "step-00000008"]


def test_transformers_pipeline_matches_evaluate(trained_tiny_model: Path, evaluation, tiny_corpus: Path) -> None:
    import transformers

    out, _ = evaluation
    rows = read_jsonl(out / "predictions.jsonl")
    with open(tiny_corpus / "test" / "metadata.csv", encoding="utf-8") as f:
        files = [str((tiny_corpus / "test" / r["file_name"]).resolve()) for r in csv.DictReader(f)]
    assert sorted(r["audio"] for r in rows) == sorted(files)  # every test file, once
    asr = transformers.pipeline("automatic-speech-recognition", model=str(trained_tiny_model), device="cpu")
    norm = get_normalizer("default")
    nonempty = 0
    for r in rows:
        audio, sr = sf.read(r["audio"], dtype="float32")
        text = asr({"raw": audio, "sampling_rate": sr})["text"]
        every_frame, audio_frames = lone_pass_texts(asr, audio, sr)
        assert every_frame == text, "the by-hand lone pass does not reproduce transformers.pipeline"
        # evaluate.py batches: its text is the pipeline's, less a Parakeet padding frame (see output_mask)
        assert audio_frames == r["hypothesis_raw"], r["audio"]
        assert norm(audio_frames) == r["hypothesis"]
        nonempty += bool(text)
    assert nonempty > 0, "the tiny model emits only blanks: the comparison would prove nothing"


def test_metrics_json_matches_predictions(evaluation) -> None:
    out, proc = evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("wer", "cer", "substitutions", "deletions", "insertions", "num_utterances", "normalizer"):
        assert key in metrics, key
    assert metrics["num_utterances"] == 12 and metrics["normalizer"] == "default" and metrics["skipped_rows"] == 0
    rows = read_jsonl(out / "predictions.jsonl")
    refs = [r["reference"] for r in rows if r["reference"]]
    hyps = [r["hypothesis"] for r in rows if r["reference"]]
    assert len(refs) == 12
    assert metrics["wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert metrics["cer"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
    words = jiwer.process_words(refs, hyps)
    assert (metrics["substitutions"], metrics["deletions"], metrics["insertions"]) == (
        words.substitutions, words.deletions, words.insertions)
    # the script's stdout summary is the same JSON
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed == {k: metrics[k] for k in printed} and "wer" in printed


def test_transcribe_prints_one_json_per_file(trained_tiny_model: Path, evaluation, run_script, tmp_path: Path) -> None:
    out, _ = evaluation
    rows = read_jsonl(out / "predictions.jsonl")[:3]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\0\0\0\0WAVE")
    files = [rows[0]["audio"], str(broken), rows[1]["audio"], rows[2]["audio"]]
    proc = run_script("transcribe.py", "--model", trained_tiny_model, *files)
    assert proc.returncode == 1, proc.stderr[-3000:]  # some input could not be read
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [x["audio"] for x in lines] == [r["audio"] for r in rows]
    assert [x["text"] for x in lines] == [r["hypothesis_raw"] for r in rows]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.wav" in errors[0]
    assert "Traceback" not in proc.stderr


def test_evaluate_skips_and_lists_an_unreadable_file(trained_tiny_model: Path, tiny_corpus: Path, run_script,
                                                     tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_text("definitely not audio\n" * 10)
    manifest = tmp_path / "eval.csv"
    with open(tiny_corpus / "test" / "metadata.csv", encoding="utf-8") as f:
        good = list(csv.DictReader(f))[:2]
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "text"])
        w.writerow([str(tiny_corpus / "test" / good[0]["file_name"]), good[0]["text"]])
        w.writerow(["broken.wav", "never heard"])
        w.writerow([str(tiny_corpus / "test" / good[1]["file_name"]), good[1]["text"]])
    out = tmp_path / "eval"
    proc = run_script("evaluate.py", "--model", trained_tiny_model, "--data", manifest, "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_utterances"] == 2 and metrics["skipped_rows"] == 1
    assert len(read_jsonl(out / "predictions.jsonl")) == 2
    report = json.loads((out / "data_report.json").read_text())
    assert len(report["skipped"]) == 1
    skipped = report["skipped"][0]
    assert skipped["row"] == 2 and Path(skipped["audio"]).name == "broken.wav"
    assert skipped["reason"].startswith("cannot read audio")


def test_bad_model_path_is_a_one_line_error(tiny_corpus: Path, run_script, tmp_path: Path) -> None:
    bad = tmp_path / "no-such-model"
    proc = run_script("evaluate.py", "--model", bad, "--data", tiny_corpus / "test", "--output", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and str(bad) in lines[0]
    assert proc.stdout == "" and not (tmp_path / "out").exists()


def test_final_evaluation_scores_the_whole_split(tiny_corpus: Path, tiny_recipe_overrides, run_script,
                                                 tmp_path: Path) -> None:
    """Periodic evaluations score `eval.max_utterances`; train_results.json the whole eval split, as evaluate.py does."""
    out = tmp_path / "model"
    proc = run_script("train.py", str(QUICKSTART), *tiny_recipe_overrides("parakeet"), f"output_dir={out}",
                      f"data.train={tiny_corpus / 'train'}", f"data.eval={tiny_corpus / 'test'}", "train.max_steps=2",
                      "train.eval_every=2", "eval.max_utterances=3", "train.learning_rate=1e-6", "train.batch_seconds=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    periodic = [r for r in read_jsonl(out / "train_log.jsonl") if "eval_wer" in r]
    assert [(r["step"], r["eval_utterances"]) for r in periodic] == [(2, 3), (2, 12)]  # step 2's, then the final
    results = json.loads((out / "train_results.json").read_text())
    assert results["eval_utterances"] == 12
    proc = run_script("evaluate.py", "--model", out, "--data", tiny_corpus / "test", "--output", tmp_path / "eval",
                      "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["eval_wer"] == json.loads((tmp_path / "eval" / "metrics.json").read_text())["wer"]
