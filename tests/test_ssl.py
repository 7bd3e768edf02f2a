"""Self-supervised wav2vec 2.0 pretraining (task ssl): masks, loss, logging, checkpoints, fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.config import ModelConfig, SSLConfig, recipe_from_dict
from pipeline.models.ssl import (
    build_pretraining_model,
    compute_span_mask,
    gumbel_temperature,
    sample_negatives,
)

REPO = Path(__file__).resolve().parents[1]
SSL_QUICKSTART = REPO / "recipes" / "ssl" / "quickstart.yaml"
W2V_QUICKSTART = REPO / "recipes" / "asr" / "wav2vec2_quickstart.yaml"

TINY = {
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": [16, 16, 16], "conv_kernel": [10, 4, 4], "conv_stride": [5, 4, 4], "feat_extract_norm": "layer",
    "do_stable_layer_norm": True, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
    "num_codevector_groups": 2, "num_codevectors_per_group": 16, "codevector_dim": 32, "proj_codevector_dim": 16,
    "hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
}
TINY_OVERRIDES = ["model.family=wav2vec2", "model.config=" + json.dumps(TINY), "train.threads=1", "train.max_minutes=null",
                  "ssl.num_negatives=10", "ssl.mask_time_length=5"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.synth.corpus import synthesize_corpus

    out = tmp_path_factory.mktemp("ssl_corpus") / "corpus"
    synthesize_corpus(out, n_train=16, n_test=4, seed=5, sample_rate=16000, progress=False)
    return out


@pytest.fixture(scope="module")
def pretrained(corpus: Path, tmp_path_factory: pytest.TempPathFactory, run_script) -> Path:
    """A 4-step pretraining run on the corpus's audio alone (a folder of wavs, metadata removed)."""
    audio_only = tmp_path_factory.mktemp("unlabelled")
    for wav in sorted((corpus / "train").glob("*.wav")):
        (audio_only / wav.name).symlink_to(wav)
    out = tmp_path_factory.mktemp("ssl_run") / "model"
    proc = run_script("train.py", SSL_QUICKSTART, *TINY_OVERRIDES, f"output_dir={out}", f"data.train={audio_only}",
                      f"data.eval={corpus / 'test'}", "train.max_steps=4", "train.batch_seconds=8", "train.log_every=1",
                      "train.eval_every=1000", "train.save_every=1000", "ssl.gumbel_temperature_decay=0.9")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_masks_and_negatives_never_touch_padding() -> None:
    model = build_pretraining_model("wav2vec2", ModelConfig(family="wav2vec2", config=TINY), SSLConfig())
    samples = torch.tensor([16000, 4000, 9000, 100])  # the last one is too short for a 10-frame span
    attention = (torch.arange(16000)[None, :] < samples[:, None]).long()
    frames = int(model._get_feat_extract_output_lengths(16000))
    sub = model._get_feature_vector_attention_mask(frames, attention)
    torch.manual_seed(0)
    for _ in range(20):
        mask = compute_span_mask(sub, 0.65, 10, 2)
        neg = sample_negatives(mask, 7)
        assert not (mask & ~sub).any(), "a padding frame was masked"
        assert mask.sum(1)[:3].min() >= 10 and not mask[3].any()
        utt, pos = neg // frames, neg % frames
        assert (utt == torch.arange(4)[:, None, None]).all(), "a distractor from another utterance"
        assert sub.gather(1, pos.view(4, -1)).all(), "a distractor in padding"
        for i in range(4):  # the masked frames' distractors are other masked frames of the same utterance
            p = pos[i][mask[i]]
            assert mask[i][p].all()
            assert (p != mask[i].nonzero()).all()
    gens = lambda: [torch.Generator().manual_seed(7 + i) for i in range(4)]  # noqa: E731
    assert torch.equal(compute_span_mask(sub, 0.65, 10, 2, gens()), compute_span_mask(sub, 0.65, 10, 2, gens()))


def test_gumbel_schedule() -> None:
    s = SSLConfig(max_gumbel_temperature=2.0, min_gumbel_temperature=0.5, gumbel_temperature_decay=0.5)
    assert [gumbel_temperature(s, k) for k in range(4)] == [2.0, 1.0, 0.5, 0.5]


def test_loss_decreases_when_overfitting(corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from accelerate import Accelerator

    from pipeline.tasks.ssl import SSLTask

    recipe = recipe_from_dict({"output_dir": str(tmp_path), "task": "ssl", "data": {"train": {"path": str(corpus / "train"), "limit": 3}},
                               "model": {"family": "wav2vec2", "config": TINY}, "ssl": {"num_negatives": 10, "mask_time_length": 5}})
    torch.manual_seed(0)
    task = SSLTask(recipe)
    task.setup(Accelerator(cpu=True))
    batch = task.collate([task.train_example(i) for i in range(3)])  # one fixed batch: masks and distractors too
    assert batch["units"] > 0
    model = task.model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for step in range(60):
        task.on_step_start(model, step)
        loss, units = task.loss(model, batch)
        (loss / units).backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()) / float(units))
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5, losses
    metrics = task.step_metrics()
    assert metrics["codevector_perplexity"] > 1 and 0.2 < metrics["masked_share"] <= 1
    with caplog.at_level("WARNING", logger="pipeline.tasks.ssl"):
        task._check_collapse(2.1, "training")  # 2 groups x 16 entries: 2.0 means one entry per group
    assert "codebook collapse" in caplog.text


def test_noise_rooms_and_speed_reach_the_pretraining_batches(corpus: Path, tmp_path: Path) -> None:
    from accelerate import Accelerator

    from pipeline.tasks.ssl import SSLTask

    def batch(augment: dict, seed: int = 0) -> dict:
        recipe = recipe_from_dict({"output_dir": str(tmp_path), "task": "ssl", "model": {"family": "wav2vec2", "config": TINY},
                                   "data": {"train": {"path": str(corpus / "train"), "limit": 3}, "augment": augment}})
        task = SSLTask(recipe)
        task.setup(Accelerator(cpu=True))
        torch.manual_seed(seed)
        return task.collate([task.train_example(i) for i in range(3)])

    clean = batch({})
    lengths = clean["attention_mask"].sum(-1)
    corrupt = {"noise": "synthetic", "noise_prob": 1.0, "reverb": "synthetic", "reverb_prob": 1.0}
    noisy, again, other = batch(corrupt), batch(corrupt), batch(corrupt, seed=1)
    assert torch.equal(noisy["attention_mask"], clean["attention_mask"])  # same lengths: corrupted, not cut
    for i, n in enumerate(lengths.tolist()):
        x, y = clean["input_values"][i, :n], noisy["input_values"][i, :n]
        assert float((x - y).pow(2).mean()) > 0.01 * float(x.pow(2).mean())
    assert torch.equal(noisy["input_values"], again["input_values"])  # a function of the generator's state
    assert not torch.equal(noisy["input_values"], other["input_values"])
    fast = batch({"speed": [1.5, 1.5]})["attention_mask"].sum(-1)
    assert torch.allclose(fast.double(), lengths.double() / 1.5, rtol=0.01), (fast, lengths)


def test_gradient_checkpointing_changes_no_gradient(corpus: Path, tmp_path: Path) -> None:
    """The quantizer's Gumbel noise and the masks are drawn inside the forward: the recomputation replays them."""
    from accelerate import Accelerator

    from pipeline.tasks.ssl import SSLTask
    from pipeline.training.activation_checkpointing import enable_gradient_checkpointing

    recipe = recipe_from_dict({"output_dir": str(tmp_path), "task": "ssl", "data": {"train": {"path": str(corpus / "train"), "limit": 3}},
                               "model": {"family": "wav2vec2", "config": {**TINY, "hidden_dropout": 0.1}},
                               "ssl": {"num_negatives": 10, "mask_time_length": 5}})
    task = SSLTask(recipe)
    task.setup(Accelerator(cpu=True))
    batch = task.collate([task.train_example(i) for i in range(3)])
    model = task.model.train()

    def gradients() -> dict[str, torch.Tensor]:
        torch.manual_seed(7)
        model.zero_grad()
        task.loss(model, batch)[0].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    assert enable_gradient_checkpointing(model) > 0
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and plain
    assert not [n for n in plain if not torch.equal(plain[n], checkpointed[n])]


def test_pretraining_logs_and_saves(pretrained: Path) -> None:
    log = [json.loads(line) for line in (pretrained / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in log if "loss" in r]
    assert len(train) == 4
    assert all(r["codevector_perplexity"] > 0 and r["contrastive_loss"] > 0 for r in train)
    assert [r["gumbel_temperature"] for r in train] == pytest.approx([2.0, 1.8, 1.62, 1.458])
    final = [r for r in log if "eval_accuracy" in r][-1]
    assert 0 <= final["eval_accuracy"] <= 1 and final["eval_code_perplexity"] >= 1
    meta = json.loads((pretrained / "speech_pipeline.json").read_text())
    assert meta["task"] == "ssl" and meta["unlabelled_hours"] > 0


def test_checkpoint_feeds_ctc_fine_tuning(pretrained: Path, corpus: Path, tmp_path: Path, run_script) -> None:
    from safetensors.torch import load_file
    from transformers import Wav2Vec2ForCTC

    from pipeline.models.asr import FAMILIES, build_model, character_tokenizer

    saved = load_file(str(pretrained / "model.safetensors"))
    ctc = Wav2Vec2ForCTC.from_pretrained(pretrained)
    encoder = ctc.wav2vec2.state_dict()
    assert all(torch.equal(v, saved[f"wav2vec2.{k}"]) for k, v in encoder.items())
    assert ctc.config.mask_time_prob == 0.05  # fine-tuning masking, not the pretraining 0.65
    tok = character_tokenizer({"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4})
    model = build_model(FAMILIES["wav2vec2"], ModelConfig(name_or_path=str(pretrained)), tok, keep_head=False)
    assert model.lm_head.out_features == 5
    assert torch.equal(model.wav2vec2.encoder.layers[0].attention.q_proj.weight,
                       saved["wav2vec2.encoder.layers.0.attention.q_proj.weight"])
    out = tmp_path / "asr"
    proc = run_script("train.py", W2V_QUICKSTART, "train.threads=1", "train.max_minutes=null", f"output_dir={out}",
                      f"model.name_or_path={pretrained}", f"data.train={corpus / 'train'}", f"data.eval={corpus / 'test'}",
                      "train.max_steps=2", "train.batch_seconds=8", "train.log_every=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "train_results.json").read_text())["steps"] == 2


def test_zero_steps_writes_the_initial_model(corpus: Path, tmp_path: Path, run_script) -> None:
    from transformers import Wav2Vec2ForPreTraining

    out = tmp_path / "init"
    proc = run_script("train.py", SSL_QUICKSTART, *TINY_OVERRIDES, f"output_dir={out}", f"data.train={corpus / 'train'}",
                      f"data.eval={corpus / 'test'}", "train.max_steps=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = Wav2Vec2ForPreTraining.from_pretrained(out)
    assert model.config.num_codevectors_per_group == 16
    assert json.loads((out / "train_results.json").read_text())["steps"] == 0


def test_conformer_pretraining_model(tmp_path: Path) -> None:
    from transformers import Wav2Vec2ConformerForCTC

    from pipeline.models.ssl import contrastive_logits

    cfg = {k: v for k, v in TINY.items() if k != "do_stable_layer_norm"}
    cfg.update(conv_depthwise_kernel_size=3, position_embeddings_type="rotary")
    model = build_pretraining_model("wav2vec2-conformer", ModelConfig(family="wav2vec2-conformer", config=cfg),
                                    SSLConfig(num_negatives=5, mask_time_length=5))
    torch.manual_seed(0)
    attention = torch.ones(2, 16000, dtype=torch.long)
    attention[1, 8000:] = 0
    frames = int(model._get_feat_extract_output_lengths(16000))
    mask = compute_span_mask(model._get_feature_vector_attention_mask(frames, attention), 0.65, 5)
    negatives = sample_negatives(mask, 5)
    out = model(torch.randn(2, 16000) * attention, attention_mask=attention, mask_time_indices=mask,
                sampled_negative_indices=negatives)
    assert torch.isfinite(out.loss)
    logits = contrastive_logits(model, out.projected_states, out.projected_quantized_states, negatives, mask)
    assert logits.shape == (int(mask.sum()), 6)
    model.save_pretrained(tmp_path)
    ctc = Wav2Vec2ConformerForCTC.from_pretrained(tmp_path, vocab_size=8)
    key = "encoder.layers.0.ffn1.intermediate_dense.weight"
    assert torch.equal(ctc.wav2vec2_conformer.state_dict()[key], model.wav2vec2_conformer.state_dict()[key])
