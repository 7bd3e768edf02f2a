"""ONNX export (`scripts/export_onnx.py`) and ONNX Runtime inference (`--runtime onnx`) give PyTorch's transcripts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from test_families import VARIANTS

from pipeline.config import ModelConfig
from pipeline.data.text import build_vocab
from pipeline.errors import ModelError
from pipeline.evaluation.evaluate import load_model_dir
from pipeline.evaluation.inference import Transcriber
from pipeline.models.asr import FAMILIES, build_model, character_tokenizer
from pipeline.models.onnx import EXPORT_INFO, ONNX_FILE, OnnxCTC, export_onnx, one_data_file

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install -e '.[onnx]')")

TEXT = "the quick brown fox jumps over the lazy dog"


def saved_model(root: Path, variant: str) -> Path:
    """A tiny random model of `variant` saved as a model directory (weights, config, tokenizer, extractor)."""
    family_name, config = VARIANTS[variant]
    family = FAMILIES[family_name]
    torch.manual_seed(0)
    tok = character_tokenizer(build_vocab([TEXT]))
    model = build_model(family, ModelConfig(family=family_name, config=config), tok, keep_head=False)
    out = root / variant
    model.save_pretrained(out)
    tok.save_pretrained(out)
    family.default_feature_extractor().save_pretrained(out)
    return out


def audios(seconds: tuple[float, ...] = (1.7, 0.6, 2.9, 1.1, 0.9)) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_family_exports_and_transcribes_as_pytorch_does(tmp_path: Path, variant: str) -> None:
    model_dir = saved_model(tmp_path, variant)
    info = export_onnx(model_dir)
    assert (model_dir / ONNX_FILE).is_file() and json.loads((model_dir / EXPORT_INFO).read_text()) == info
    assert info["check"]["max_abs_diff"] < 1e-3 and info["check"]["greedy_agreement"] == 1.0
    assert not list(model_dir.glob(".onnx-tmp*"))

    model, fe, tok, _ = load_model_dir(str(model_dir), device="cpu")
    onnx, _, _, _ = load_model_dir(str(model_dir), device="cpu", runtime="onnx")
    assert isinstance(onnx, OnnxCTC)
    # batch sizes and lengths the export never saw; one worker and several (each its own session threads)
    want = Transcriber(model, fe, tok, workers=1).transcribe(audios())
    for workers in (1, 2):
        assert Transcriber(onnx, fe, tok, workers=workers).transcribe(audios()) == want
    assert any(want), "every transcript empty: the comparison would prove nothing"
    (logits, mask), (ref, ref_mask) = (Transcriber(m, fe, tok).forward(audios()[:3]) for m in (onnx, model))
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(logits[mask], ref[ref_mask], atol=1e-4, rtol=1e-4)


def test_a_stale_or_missing_export_is_refused(tmp_path: Path) -> None:
    model_dir = saved_model(tmp_path, "parakeet")
    with pytest.raises(ModelError, match="no ONNX export; run: python scripts/export_onnx.py"):
        load_model_dir(str(model_dir), runtime="onnx")
    export_onnx(model_dir)
    weights = load_file(model_dir / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 1.0  # retrained since the export
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match="exported from other weights than model.safetensors"):
        load_model_dir(str(model_dir), runtime="onnx")


def test_scripts_export_then_transcribe_and_evaluate_on_onnx_runtime(trained_tiny_model: Path, tiny_corpus: Path,
                                                                      run_script, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(trained_tiny_model, model_dir, ignore=shutil.ignore_patterns("checkpoints"))
    proc = run_script("export_onnx.py", "--model", model_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["inputs"] == ["input_features", "attention_mask"]

    files = sorted(str(p) for p in (tiny_corpus / "test").glob("*.wav"))[:4]
    outputs = {}
    for runtime in ("torch", "onnx"):
        proc = run_script("transcribe.py", "--model", model_dir, "--runtime", runtime, "--timestamps", *files)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[runtime] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert outputs["onnx"] == outputs["torch"] and len(outputs["onnx"]) == 4
    assert any(r["text"] for r in outputs["onnx"])

    metrics = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"eval-{runtime}"
        proc = run_script("evaluate.py", "--model", model_dir, "--data", tiny_corpus / "test", "--output", out,
                          "--runtime", runtime, "--no-report")
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics[runtime] = json.loads((out / "metrics.json").read_text())
    assert metrics["onnx"]["wer"] == metrics["torch"]["wer"] and metrics["onnx"]["cer"] == metrics["torch"]["cer"]
    assert metrics["onnx"]["decoding"]["runtime"] == "onnx" and "runtime" not in metrics["torch"]["decoding"]


def test_onnx_runtime_errors_are_one_line(trained_tiny_model: Path, run_script, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(trained_tiny_model, model_dir, ignore=shutil.ignore_patterns("checkpoints"))
    wav = tmp_path / "a.wav"
    sf.write(wav, audios((1.0,))[0], 16000)
    proc = run_script("transcribe.py", "--model", model_dir, "--runtime", "onnx", wav)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {model_dir}: no ONNX export; run: python "
                                                    f"scripts/export_onnx.py --model {model_dir}")
    proc = run_script("export_onnx.py", "--model", tmp_path / "nowhere")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no model.safetensors" in proc.stderr


def test_weights_in_many_files_are_gathered_into_one(tmp_path: Path) -> None:
    """Over 2 GB the exporter writes a file per weight: `one_data_file` leaves the graph and one data file."""
    import onnx
    import onnxruntime as ort

    model_dir = saved_model(tmp_path, "wav2vec2")
    export_onnx(model_dir)
    split = tmp_path / "split"
    split.mkdir()
    onnx.save_model(onnx.load(str(model_dir / ONNX_FILE)), str(split / ONNX_FILE), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    assert len(list(split.iterdir())) > 10
    one_data_file(split / ONNX_FILE)
    assert sorted(p.name for p in split.iterdir()) == [ONNX_FILE, ONNX_FILE + ".data"]
    feed = {"input_values": audios((1.3, 0.8))[0][None, :], "attention_mask": np.ones((1, 20800), dtype=np.int64)}
    want, got = (ort.InferenceSession(str(d / ONNX_FILE)).run(["logits"], feed)[0] for d in (model_dir, split))
    np.testing.assert_array_equal(got, want)
