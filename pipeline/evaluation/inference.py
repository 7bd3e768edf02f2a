"""Batched, length-sorted greedy CTC transcription that gives the same text at any batch size.

Features are computed one utterance at a time (exactly as `transformers.pipeline` computes them,
attention mask included) and only then padded, and frames past each utterance's end are forced to
blank, so padding a batch never changes a transcript: each one is the text `transformers.pipeline`
gives for that utterance alone, less anything the pipeline reads off an output frame that the model
itself marks as padding (its label there depends on the batch, see `output_mask`). Models whose
outputs do depend on padding (a group-normalised convolutional feature encoder, Wav2Vec2-Conformer's
depthwise convolutions) are run one utterance at a time.

On a CPU, batches run on several threads at once, one torch thread each (`workers`): these small
models use a core far better per batch than they use two cores on one batch (on 2 cores, 1.6-1.9 s
with one batch at a time on 2 threads vs 1.1-1.2 s with two batches on one thread each). Each
batch's arithmetic is then the one-thread arithmetic, whatever the number of workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from pipeline.data.batching import eval_batches
from pipeline.evaluation.timestamps import Timed, path_words, seconds_per_frame, settle, timed
from pipeline.models.fast_features import single_utterance_log_mel
from pipeline.models.fast_forward import speed_up

T = TypeVar("T")

# Inference batch budget (padded audio seconds) when none is given. Measured with benchmarks/transcribe.py
# on 2 CPU cores: ~30-s batches keep the activations cache-sized and transcribe the synthetic test set
# 1.4x (Conformer) to 1.8x (wav2vec 2.0) faster than 240-s ones, and beat 15 and 60 s; a GPU wants big ones.
CPU_BATCH_SECONDS = 30.0
GPU_BATCH_SECONDS = 240.0


# Model types whose forward pass writes no module state, so that several threads may run it at once.
# Wav2Vec2-Conformer and Wav2Vec2-BERT cache their position embeddings on the module (`extend_pe`,
# `cached_rotary_positional_embedding`) during forward: they run on one thread.
THREAD_SAFE_MODEL_TYPES = frozenset({"wav2vec2", "hubert", "wavlm", "parakeet_ctc"})


def default_batch_seconds(device: torch.device | str) -> float:
    return CPU_BATCH_SECONDS if torch.device(device).type == "cpu" else GPU_BATCH_SECONDS


def default_workers(model: Any, device: torch.device | str) -> int:
    """Batches run at once: on a CPU, one per torch thread for thread-safe models; elsewhere one."""
    model_type = getattr(getattr(model, "module", model).config, "model_type", "")
    if torch.device(device).type != "cpu" or model_type not in THREAD_SAFE_MODEL_TYPES:
        return 1
    return max(1, torch.get_num_threads())


def output_mask(model: Any, attention_mask: torch.Tensor, frames_mask: torch.Tensor, frames: int) -> torch.Tensor:
    """Boolean (batch, frames) mask of the CTC output frames to decode.

    Those of each utterance's whole feature sequence (`frames_mask`), as `transformers.pipeline`
    decodes them, except on Parakeet: there an output frame that the attention mask marks as padding
    (the last one, when the features end in a partial frame) has its whole attention row masked, and its
    logits then depend on the padding around it: they differ between a batch and a lone pass, and so
    could its label. Parakeet decodes only the frames its attention mask counts as audio.
    """
    base = getattr(model, "module", model)
    if hasattr(base, "_get_output_attention_mask"):  # Parakeet
        return base._get_output_attention_mask(attention_mask, target_length=frames).bool()
    if hasattr(base, "_get_feat_extract_output_lengths"):
        lengths = base._get_feat_extract_output_lengths(frames_mask.sum(-1))
        lengths = torch.as_tensor(lengths, device=attention_mask.device)
        return torch.arange(frames, device=attention_mask.device)[None, :] < lengths[:, None]
    return torch.ones(frames_mask.shape[0], frames, dtype=torch.bool, device=frames_mask.device)


def samples_per_frame(model: Any, feature_extractor: Any) -> int | None:
    """Input samples per CTC output frame, when the architecture fixes it."""
    config = getattr(model, "module", model).config
    ratio = getattr(config, "inputs_to_logits_ratio", None)
    if config.model_type == "parakeet_ctc":
        sub = getattr(getattr(config, "encoder_config", None), "subsampling_factor", None)
        hop = getattr(feature_extractor, "hop_length", None)
        return int(sub * hop) if sub and hop else None
    return int(ratio) if ratio else None


def pads_exactly(model: Any) -> bool:
    """Whether padding a batch leaves every utterance's logits as they are alone.

    Not so for a group-normalised convolutional feature encoder (wav2vec2/HuBERT/WavLM *base*: the
    first layer's statistics span the padded signal) nor for Wav2Vec2-Conformer (its depthwise
    convolutions read the padded frames); those are transcribed one utterance at a time.
    """
    config = getattr(model, "module", model).config
    return not (getattr(config, "feat_extract_norm", None) == "group" or config.model_type == "wav2vec2-conformer")


def featurize(feature_extractor: Any, audios: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Per-utterance features, then padded: batch composition cannot change any utterance's features.

    The attention mask is the feature extractor's own, as `transformers.pipeline` passes it: log-mel
    extractors (Parakeet, SeamlessM4T for Wav2Vec2-BERT) mark a trailing partial frame as padding.
    `frames_mask` covers each utterance's whole feature sequence: the pipeline decodes every output
    frame of it, and so does `output_mask` wherever that frame's label cannot depend on the batch.
    """
    key = feature_extractor.model_input_names[0]
    arrays, valid = (list(x) for x in zip(*(utterance_features(feature_extractor, a) for a in audios), strict=True))
    batch = pad_features(arrays, float(getattr(feature_extractor, "padding_value", 0.0)), key, valid=valid)
    batch["frames_mask"] = pad_features(arrays, 0.0, key)["attention_mask"]
    return batch


def utterance_features(feature_extractor: Any, audio: np.ndarray) -> tuple[np.ndarray, int]:
    """One utterance's model input, as the extractor computes it alone, and how many of its frames are audio
    (log-mel extractors mark a trailing partial frame as padding in their attention mask)."""
    fast = single_utterance_log_mel(feature_extractor)
    if fast is not None:  # the same numbers, without a batch-of-one's overhead
        return fast(audio)
    out = feature_extractor(audio, sampling_rate=feature_extractor.sampling_rate, return_attention_mask=True,
                            return_tensors="np")
    features = out[feature_extractor.model_input_names[0]][0]
    return features, int(out["attention_mask"][0].sum()) if "attention_mask" in out else features.shape[0]


def pad_features(arrays: Sequence[np.ndarray], pad_value: float, key: str,
                 valid: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Stack per-utterance inputs (samples, or frames x features) with padding and an attention mask.

    `valid`: the number of real frames of each input (default: all of them).
    """
    longest = max(a.shape[0] for a in arrays)
    batch = np.full((len(arrays), longest, *arrays[0].shape[1:]), pad_value, dtype=np.float32)
    mask = np.zeros((len(arrays), longest), dtype=np.int64)
    for i, a in enumerate(arrays):
        batch[i, : a.shape[0]] = a
        mask[i, : a.shape[0] if valid is None else valid[i]] = 1
    return {key: torch.from_numpy(batch), "attention_mask": torch.from_numpy(mask)}


class Transcriber:
    """Greedy CTC decoding of many utterances, sorted by length and batched by total seconds."""

    def __init__(self, model: Any, feature_extractor: Any, tokenizer: Any, device: torch.device | str | None = None,
                 batch_seconds: float | None = None, max_batch_size: int = 64, workers: int | None = None,
                 fast_forward: bool = True) -> None:
        """`workers`: batches transcribed at once, each on its share of the torch threads (default: see
        `default_workers`; 1 turns it off). Transcripts do not depend on it.
        `fast_forward`: on a CPU, swap in `pipeline.models.fast_forward`'s equivalent forwards (in place, on `model`)."""
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        # a model without parameters (ONNX Runtime's, pipeline.models.onnx) runs on the CPU
        self.device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
        self.model = speed_up(model) if fast_forward and self.device.type == "cpu" else model
        self.batch_seconds = batch_seconds if batch_seconds is not None else default_batch_seconds(self.device)
        self.max_batch_size = max_batch_size if pads_exactly(model) else 1
        self.blank = int(getattr(model, "module", model).config.pad_token_id)
        self.workers = max(1, workers) if workers else default_workers(model, self.device)

    @torch.inference_mode()
    def greedy_paths(self, logits: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Each utterance's most probable label per output frame of audio."""
        ids = logits.argmax(dim=-1)
        ids[~mask] = self.blank
        return [row[: int(m.sum())].tolist() for row, m in zip(ids, mask, strict=True)]

    def logits_to_text(self, logits: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(path) for path in self.greedy_paths(logits, mask)]

    @torch.inference_mode()
    def logits_to_words(self, logits: torch.Tensor, mask: torch.Tensor) -> list[Timed]:
        """`logits_to_text`'s transcripts, each with its words' start, end (seconds) and confidence."""
        out = []
        for row, path in zip(logits, self.greedy_paths(logits, mask), strict=True):
            log_probs = row[: len(path)].float().cpu().log_softmax(-1)
            out.append(timed(self.tokenizer.decode(path), path_words(path, self.tokenizer, self.blank, log_probs),
                             self.frame_seconds()))
        return out

    def frame_seconds(self) -> float:
        """Seconds per output frame (a one-line error for a model without a fixed frame rate)."""
        return seconds_per_frame(samples_per_frame(self.model, self.feature_extractor),
                                 self.feature_extractor.sampling_rate)

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """The model in eval mode for the block, as it was afterwards (a training loop's model included)."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            if was_training:
                self.model.train()

    def forward(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 logits (batch, frames, vocab) of one batch and the mask of its frames of real audio."""
        with self.eval_mode():
            return self._forward(audios)

    @torch.inference_mode()
    def _forward(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` without touching the model's mode: several threads may run it at once."""
        inputs = {k: v.to(self.device) for k, v in featurize(self.feature_extractor, audios).items()}
        frames = inputs.pop("frames_mask")
        logits = self.model(**inputs).logits.float()
        return logits, output_mask(self.model, inputs["attention_mask"], frames, logits.shape[1])

    def forward_many(self, batches: Sequence[Sequence[np.ndarray]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`forward` of each batch, in order; with several workers, that many batches at once, each on
        `threads // workers` torch threads (restored afterwards)."""
        workers = min(self.workers, len(batches))
        with self.eval_mode():
            if workers <= 1:
                for audios in batches:
                    yield self._forward(audios)
                return
            # torch's thread count is per OS thread once set (and new threads inherit the last value set
            # anywhere), so each worker sets its own and the caller's is put back at the end.
            threads = torch.get_num_threads()
            try:
                with ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                                        initargs=(max(1, threads // workers),)) as pool:
                    yield from pool.map(self._forward, batches)
            finally:
                torch.set_num_threads(threads)

    def transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[str]:
        return self.logits_to_text(*self.forward(audios))

    def batches(self, audios: Sequence[np.ndarray]) -> list[list[int]]:
        """Indices of `audios` in inference batches: longest first, packed by padded seconds."""
        sr = self.feature_extractor.sampling_rate
        durations = [len(a) / sr for a in audios]
        order = sorted(range(len(audios)), key=lambda i: (-durations[i], i))
        return eval_batches(order, durations, self.batch_seconds, self.max_batch_size)

    def transcribe(self, audios: Sequence[np.ndarray], progress: bool = False) -> list[str]:
        """Transcripts in input order."""
        return self.decode_all(audios, self.logits_to_text, progress)

    def transcribe_words(self, audios: Sequence[np.ndarray], progress: bool = False, on_speech: bool = True
                         ) -> list[Timed]:
        """Transcripts with word timestamps (`logits_to_words`), in input order; `on_speech`: corrected for the
        model's emission lag and kept within the speech (`timestamps.settle`), else the output frames' own."""
        results = self.decode_all(audios, self.logits_to_words, progress)
        if not on_speech:
            return results
        sr, frame = self.feature_extractor.sampling_rate, self.frame_seconds()
        return [settle(r, a, sr, frame) for r, a in zip(results, audios, strict=True)]

    def decode_all(self, audios: Sequence[np.ndarray], decode: Callable[[torch.Tensor, torch.Tensor], list[T]],
                   progress: bool = False) -> list[T]:
        """`decode(logits, mask)` of every batch, one result per audio in input order."""
        out: list[Any] = [None] * len(audios)
        batches = self.batches(audios)
        results = self.forward_many([[audios[i] for i in b] for b in batches])
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(batches), desc="transcribing", unit="batch")
        # Decoding (greedy, or a beam search that is not thread-safe) stays on this thread.
        for b, (logits, mask) in zip(batches, results, strict=True):
            for i, result in zip(b, decode(logits, mask), strict=True):
                out[i] = result
        return out
