"""Transcription on several CPU threads at once (`Transcriber(workers=N)`): same transcripts, state restored."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
import torch

from pipeline.audio import read_audio
from pipeline.evaluation.evaluate import load_model_dir
from pipeline.evaluation.inference import Transcriber, default_workers


@pytest.fixture()
def four_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def model_and_audio(trained_tiny_model: Path, tiny_corpus: Path):
    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    with open(tiny_corpus / "test" / "metadata.csv", encoding="utf-8") as f:
        names = [r["file_name"] for r in csv.DictReader(f)]
    audios = [read_audio(str(tiny_corpus / "test" / n), 16000)[0] for n in names]
    return model, fe, tok, audios


def test_workers_give_the_one_at_a_time_transcripts(model_and_audio, four_threads) -> None:
    model, fe, tok, audios = model_and_audio
    single = Transcriber(model, fe, tok, max_batch_size=1, workers=1).transcribe(audios)
    assert any(single), "the tiny model emits only blanks: the comparison would prove nothing"
    # 4-s batches: several batches, so that the workers really run side by side
    parallel = Transcriber(model, fe, tok, batch_seconds=4.0, workers=3)
    seen: dict[int, int] = {}
    inner = parallel._forward

    def spy(batch):
        seen[threading.get_ident()] = torch.get_num_threads()
        return inner(batch)

    parallel._forward = spy  # type: ignore[method-assign]
    assert parallel.transcribe(audios) == single
    assert len(seen) > 1, "the batches all ran on one thread"
    assert set(seen.values()) == {1}, seen  # 4 threads // 3 workers: one torch thread per worker
    assert torch.get_num_threads() == 4  # the caller's setting is back


def test_model_mode_is_restored(model_and_audio, four_threads) -> None:
    model, fe, tok, audios = model_and_audio
    model.train()
    try:
        tr = Transcriber(model, fe, tok, batch_seconds=4.0, workers=2)
        tr.transcribe(audios[:6])
        assert model.training  # a training loop's model goes on training
        tr.forward(audios[:2])
        assert model.training
    finally:
        model.eval()


def test_default_workers_by_device_and_model(model_and_audio, four_threads) -> None:
    from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC

    model, fe, tok, _ = model_and_audio
    assert default_workers(model, "cpu") == 4
    assert default_workers(model, "cuda") == 1
    conformer = Wav2Vec2ConformerForCTC(Wav2Vec2ConformerConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=[8, 8],
        conv_kernel=[10, 3], conv_stride=[5, 2], num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        vocab_size=8, position_embeddings_type="rotary"))
    assert default_workers(conformer, "cpu") == 1  # caches position embeddings on the module in forward
    assert Transcriber(model, fe, tok, workers=1).workers == 1
