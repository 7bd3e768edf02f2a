"""`pipeline.models.fast_forward`: the faster forwards must compute what transformers' do.

Tiny random models on padded batches, each against an untouched copy of itself: ParakeetForCTC
(subsampling by 4 and by 8, so one and two depthwise/pointwise pairs) and the wav2vec 2.0 kind
(Wav2Vec2 with the per-frame LayerNorm and the GroupNorm feature-encoder layouts, HuBERT, WavLM).
Logits, loss, every parameter's gradient and BatchNorm's running statistics agree; parameters and
`save_pretrained` output are unchanged; models it does not know (Wav2Vec2-BERT) and gradient
checkpointing keep transformers' forwards; the training loop and `Transcriber` use the fast forwards
and can be told not to.
"""

from __future__ import annotations

import copy
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    HubertConfig,
    HubertForCTC,
    ParakeetCTCConfig,
    ParakeetForCTC,
    Wav2Vec2BertConfig,
    Wav2Vec2BertForCTC,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    WavLMConfig,
    WavLMForCTC,
)

from pipeline.models.fast_forward import speed_up  # noqa: E402

_WAVEFORM = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "conv_dim": [16, 16, 16], "conv_kernel": [10, 8, 4], "conv_stride": [5, 4, 4],
             "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "vocab_size": 12, "pad_token_id": 11,
             "hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
             "final_dropout": 0.0, "layerdrop": 0.0, "mask_time_prob": 0.0, "mask_feature_prob": 0.0}
_LAYER = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
MODELS = {
    "parakeet-sub4": lambda: _parakeet(4),
    "parakeet-sub8": lambda: _parakeet(8),
    "wav2vec2-layernorm": lambda: Wav2Vec2ForCTC(Wav2Vec2Config(**_WAVEFORM, **_LAYER)),
    "wav2vec2-groupnorm": lambda: Wav2Vec2ForCTC(Wav2Vec2Config(**_WAVEFORM, feat_extract_norm="group")),
    "hubert": lambda: HubertForCTC(HubertConfig(**_WAVEFORM, **_LAYER)),
    "wavlm": lambda: WavLMForCTC(WavLMConfig(**_WAVEFORM, **_LAYER, num_buckets=32, max_bucket_distance=100)),
}


def _parakeet(subsampling: int) -> ParakeetForCTC:
    enc = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
           "conv_kernel_size": 7, "subsampling_factor": subsampling, "subsampling_conv_channels": 8,
           "num_mel_bins": 80, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
           "dropout_positions": 0.0, "layerdrop": 0.0}
    return ParakeetForCTC(ParakeetCTCConfig(encoder_config=enc, vocab_size=12, pad_token_id=11))


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


def _batch(model: torch.nn.Module, lengths: list[int]) -> dict[str, torch.Tensor]:
    """Padded inputs of `lengths` frames (log-mel models) or 10-ms steps of samples (waveform models)."""
    g = torch.Generator().manual_seed(1)
    key = model.main_input_name
    scale = 1 if key == "input_features" else 160
    steps = [n * scale for n in lengths]
    mask = (torch.arange(max(steps))[None, :] < torch.tensor(steps)[:, None]).long()
    shape = (len(lengths), max(steps), 80) if key == "input_features" else (len(lengths), max(steps))
    values = torch.randn(*shape, generator=g)
    values = values * (mask[..., None] if values.dim() == 3 else mask)
    labels = torch.randint(0, 11, (len(lengths), 6), generator=g)
    labels[1:, 4:] = -100
    return {key: values, "attention_mask": mask, "labels": labels}


def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("lengths", [[160, 123, 97, 160], [120, 120]], ids=["padded", "no-padding"])
def test_same_logits_loss_gradients_and_statistics(name: str, lengths: list[int]) -> None:
    plain = _model(name)
    fast = speed_up(copy.deepcopy(plain))
    assert getattr(fast, "_pipeline_fast_forward", False)
    batch = _batch(plain, lengths)
    key = plain.main_input_name

    plain.eval(), fast.eval()
    with torch.inference_mode():
        expected, got = plain(**_inputs(batch)).logits, fast(**_inputs(batch)).logits
        unmasked_expected, unmasked = plain(**{key: batch[key]}).logits, fast(**{key: batch[key]}).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(unmasked, unmasked_expected, atol=1e-4, rtol=1e-4)

    plain.train(), fast.train()
    loss_plain = plain(**batch).loss
    loss_fast = fast(**batch).loss
    loss_plain.backward()
    loss_fast.backward()
    torch.testing.assert_close(loss_fast, loss_plain, atol=1e-4, rtol=1e-5)
    grads_plain = dict(plain.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in grads_plain.values() if p.grad is not None)
    for pname, p in fast.named_parameters():
        q = grads_plain[pname]
        assert (p.grad is None) == (q.grad is None), pname
        if p.grad is not None:
            assert float((p.grad - q.grad).abs().max()) <= 1e-4 * scale, pname
    for (bname, a), (_, b) in zip(fast.named_buffers(), plain.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=bname)


@pytest.mark.parametrize("name", ["parakeet-sub4", "wav2vec2-layernorm"])
def test_parameters_and_saved_checkpoint_unchanged(name: str, tmp_path) -> None:
    plain = _model(name)
    fast = speed_up(copy.deepcopy(plain))
    batch = _batch(plain, [160, 100])
    fast.train()
    fast(**batch).loss.backward()  # a training pass: nothing it does may change what is saved
    fast.eval()
    for (pname, a), (_, b) in zip(fast.state_dict().items(), plain.state_dict().items(), strict=True):
        if "running" not in pname and "num_batches" not in pname:
            assert torch.equal(a, b), pname
            assert a.stride() == b.stride(), pname
    fast.save_pretrained(tmp_path / "m")
    reloaded = type(plain).from_pretrained(tmp_path / "m")  # a plain transformers model again
    assert not getattr(reloaded, "_pipeline_fast_forward", False)
    with torch.inference_mode():
        a, b = reloaded(**_inputs(batch)).logits, fast(**_inputs(batch)).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_unknown_models_left_alone() -> None:
    model = Wav2Vec2BertForCTC(Wav2Vec2BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=64, conv_depthwise_kernel_size=7,
                                                  feature_projection_input_dim=160, vocab_size=12))
    assert speed_up(model) is model
    assert not getattr(model, "_pipeline_fast_forward", False)
    assert all("forward" not in vars(m) for m in model.modules())


def test_gradient_checkpointing_keeps_the_original_feature_encoder() -> None:
    plain = _model("wav2vec2-layernorm")
    fast = speed_up(copy.deepcopy(plain))
    fast.activation_checkpointing_enable()
    fast.train()
    batch = _batch(plain, [120, 80])
    seen: list[bool] = []
    encoder = fast.wav2vec2.feature_extractor
    hook = encoder.conv_layers[0].register_forward_hook(lambda *_: seen.append(True))  # runs only via the layer's call
    loss = fast(**batch).loss
    hook.remove()
    loss.backward()
    assert seen, "with gradient checkpointing the original (layer-by-layer) forward runs"
    torch.testing.assert_close(loss, plain.train()(**batch).loss, atol=1e-4, rtol=1e-5)


def test_transcriber_uses_it_unless_told_not_to() -> None:
    from pipeline.evaluation.inference import Transcriber

    plain = _model("parakeet-sub4")
    assert getattr(Transcriber(copy.deepcopy(plain), None, None).model, "_pipeline_fast_forward", False)
    assert not getattr(Transcriber(copy.deepcopy(plain), None, None, fast_forward=False).model,
                       "_pipeline_fast_forward", False)


def test_training_loop_trains_the_same_with_and_without(tiny_corpus, tiny_recipe_overrides, tmp_path,
                                                        monkeypatch) -> None:
    """Real `run_training` runs (tiny Parakeet, tiny corpus): the recipe keys decide whether the loop
    patches the model (and keeps freed memory), and both runs log the same losses step by step."""
    import json

    from conftest import QUICKSTART

    import pipeline.training.loop as loop
    from pipeline.config import load_recipe

    calls: list[int] = []

    def spy(model: torch.nn.Module) -> torch.nn.Module:
        calls.append(1)
        return speed_up(model)

    monkeypatch.setattr(loop, "speed_up", spy)
    mallopt_calls: list[int] = []  # train.keep_freed_memory, wired the same way (glibc itself untouched here)
    monkeypatch.setattr(loop, "keep_freed_memory", lambda: mallopt_calls.append(1) or False)
    losses = {}
    for fast in (True, False):
        out = tmp_path / f"fast_{fast}"
        recipe = load_recipe(QUICKSTART, [*tiny_recipe_overrides("parakeet"), f"output_dir={out}",
                                          f"data.train={tiny_corpus / 'train'}", "data.eval=null",
                                          "data.augment.speed=null", "data.augment.vtlp=0", "model.mask_time_prob=0",
                                          "model.mask_feature_prob=0", "train.max_steps=4", "train.log_every=1",
                                          "train.batch_seconds=8", "train.learning_rate=1e-3", "train.warmup_steps=0",
                                          "train.save_every=1000", "train.eval_every=1000",
                                          f"train.fast_forward={str(fast).lower()}",
                                          f"train.keep_freed_memory={str(fast).lower()}"])
        loop.run_training(recipe)
        assert len(calls) == 1, "the loop patches the model only when train.fast_forward is on"
        assert len(mallopt_calls) == 1, "the loop sets malloc's thresholds only when train.keep_freed_memory is on"
        records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        losses[fast] = [r["loss"] for r in records if "loss" in r]
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_single_utterance_log_mel_is_bit_identical_and_checked() -> None:
    import numpy as np
    from transformers import ParakeetFeatureExtractor, Wav2Vec2FeatureExtractor

    from pipeline.evaluation.inference import featurize
    from pipeline.models.fast_features import single_utterance_log_mel

    fe = ParakeetFeatureExtractor()
    fast = single_utterance_log_mel(fe)
    assert fast is not None
    rng = np.random.default_rng(3)
    audios = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 23457, 4001, 800)]
    for audio in audios:
        ref = fe(audio, sampling_rate=16000, return_attention_mask=True, return_tensors="np")
        features, valid = fast(audio)
        assert np.array_equal(features, ref["input_features"][0])
        assert valid == int(ref["attention_mask"][0].sum())
    batch = featurize(fe, audios)  # through the fast path: what the extractor would give, padded
    for i, audio in enumerate(audios):
        ref = fe(audio, sampling_rate=16000, return_attention_mask=True, return_tensors="np")
        n = ref["input_features"].shape[1]
        assert np.array_equal(batch["input_features"][i, :n].numpy(), ref["input_features"][0])
        assert int(batch["attention_mask"][i].sum()) == int(ref["attention_mask"][0].sum())

    assert single_utterance_log_mel(Wav2Vec2FeatureExtractor()) is None  # another kind: the extractor itself

    base = ParakeetFeatureExtractor

    class ParakeetFeatureExtractor(base):  # noqa: F811 - the same class name on purpose
        """Same name, other numbers (as a future transformers might compute them): the probe must notice."""

        def _torch_extract_fbank_features(self, waveform, device="cpu"):
            return super()._torch_extract_fbank_features(waveform, device) * 1.001

    assert single_utterance_log_mel(ParakeetFeatureExtractor()) is None


def test_parakeet_dropout_keeps_the_same_random_draws() -> None:
    """Position dropout (each utterance's positions then differ) and attention dropout (the original
    attention runs): under one seed the fast model draws the same masks and computes the same logits."""
    torch.manual_seed(0)
    enc = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
           "conv_kernel_size": 7, "subsampling_factor": 4, "subsampling_conv_channels": 8, "num_mel_bins": 80,
           "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1, "dropout_positions": 0.5,
           "layerdrop": 0.0}
    plain = ParakeetForCTC(ParakeetCTCConfig(encoder_config=enc, vocab_size=12, pad_token_id=11)).train()
    with torch.no_grad():
        for module in plain.modules():  # positions that matter (at initialisation their effect is tiny)
            if hasattr(module, "relative_k_proj"):
                module.relative_k_proj.weight.mul_(30)
    fast = speed_up(copy.deepcopy(plain))
    batch = _inputs(_batch(plain, [160, 123, 97]))
    for attention_dropout in (0.1, 0.0):  # the original attention, then the fast one with dropped positions
        for model in (plain, fast):
            for module in model.modules():
                if hasattr(module, "relative_k_proj"):
                    module.attention_dropout = attention_dropout
        logits = []
        for model in (plain, fast):
            torch.manual_seed(5)
            logits.append(model(**batch).logits)
        torch.testing.assert_close(logits[1], logits[0], atol=1e-4, rtol=1e-4)


def test_first_convolution_gradients_match_torch_over_uneven_row_blocks() -> None:
    """The one-channel convolution's own backward (weight gradient summed over row blocks, a remainder
    block, and the input gradient when asked for) gives torch's gradients, for a row count that is not
    a multiple of the block."""
    from pipeline.models.fast_forward import _PatchProduct, _single_channel_conv2d

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 8, 3, stride=2, padding=1)
    image = torch.randn(2, 205, 20, requires_grad=True)
    ref = conv(image.unsqueeze(1)).permute(0, 2, 3, 1)
    out = _single_channel_conv2d(conv, image)
    rows = out.shape[0] * out.shape[1] * out.shape[2]
    assert rows % _PatchProduct.BLOCK != 0 and rows > _PatchProduct.BLOCK
    assert out._base is None  # a tensor of its own: the in-place ReLU after it needs no copy
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (image, conv.weight, conv.bias), grad)
    got = torch.autograd.grad(out, (image, conv.weight, conv.bias), grad)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
