"""FastSpeech2Conformer text-to-mel: model presets, training targets, and the saved acoustic model.

Targets are made with the *vocoder's* mel preset (pipeline.tts.mel), so the predicted mels go
straight into a vocoder trained on that preset; the preset is saved with the model and a pair whose
presets differ is refused (`TextToSpeech`). As in FastSpeech2 / ESPnet:

- the model predicts mels normalised per bin (global mean/std of the training mels, saved);
- pitch and energy are averaged over each phoneme's frames, then normalised (mean/std saved).
  Pitch: log F0 from a normalised-autocorrelation tracker on the mel's own frames, averaged over
  the voiced frames (a phoneme without any gets the mean, 0 after normalisation). Energy: log of
  the L2 norm of the linear magnitude spectrum of each frame (the mel's own STFT).

Multi-speaker models (`acoustic.speakers`) add transformers' speaker-id embedding: id 0 is
``<unknown>``, an average voice learnt from a fixed tenth of the training utterances (and used for
speakers never seen in training, such as held-out evaluation voices); ids 1.. are the training
speakers in name order.

An acoustic model directory holds ``config.json`` + ``model.safetensors`` (transformers),
``phonemes.json`` (vocabulary, inference voice), ``mel_config.json``, ``acoustic.json`` (stats) and,
for a multi-speaker model, ``speakers.json`` (names in id order and the default one).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelError, RecipeError
from pipeline.tts.mel import MelConfig, MelFrontEnd, check_compatible
from pipeline.tts.phonemes import PhonemeVocab, text_to_phonemes

logger = logging.getLogger(__name__)

STATS_FILE = "acoustic.json"
SPEAKERS_FILE = "speakers.json"
UNKNOWN_SPEAKER = "<unknown>"
ENERGY_FLOOR = 1e-4

# Sizes. base: transformers' defaults (ESPnet's LJSpeech model, ~42 M parameters).
PRESETS: dict[str, dict[str, Any]] = {
    "base": {},
    "small": {  # ~3 M parameters: trains on a CPU in minutes
        "hidden_size": 128, "encoder_layers": 2, "decoder_layers": 2, "encoder_linear_units": 512,
        "decoder_linear_units": 512, "encoder_kernel_size": 7, "decoder_kernel_size": 15,
        "speech_decoder_postnet_layers": 3, "speech_decoder_postnet_units": 128,
        "duration_predictor_channels": 128, "pitch_predictor_channels": 128, "pitch_predictor_layers": 2,
        "energy_predictor_channels": 128,
    },
    "tiny": {  # tests only
        "hidden_size": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_linear_units": 64,
        "decoder_linear_units": 64, "encoder_kernel_size": 3, "decoder_kernel_size": 3,
        "speech_decoder_postnet_layers": 2, "speech_decoder_postnet_units": 32, "speech_decoder_postnet_kernel": 3,
        "duration_predictor_channels": 32, "duration_predictor_layers": 1, "pitch_predictor_channels": 32,
        "pitch_predictor_layers": 1, "pitch_predictor_kernel_size": 3, "energy_predictor_channels": 32,
        "energy_predictor_layers": 1,
    },
}


def model_config(raw: dict[str, Any] | None, vocab_size: int, n_mels: int, num_speakers: int | None = None) -> Any:
    """`model.config` of a recipe ({preset: small, any FastSpeech2ConformerConfig key}) -> a config."""
    from transformers import FastSpeech2ConformerConfig

    raw = dict(raw or {})
    preset = str(raw.pop("preset", "small"))
    if preset not in PRESETS:
        raise RecipeError(f"model.config.preset: unknown acoustic preset {preset!r} (available: {', '.join(PRESETS)})")
    known = {f.name for f in dataclasses.fields(FastSpeech2ConformerConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RecipeError(f"model.config: unknown FastSpeech2ConformerConfig keys {', '.join(unknown)}")
    for key in ("vocab_size", "num_mel_bins", "num_speakers"):
        if key in raw:
            raise RecipeError(f"model.config.{key}: set by the toolkit (phoneme vocabulary, mel preset, "
                              "acoustic.speakers), leave it out")
    kwargs = {**PRESETS[preset], **raw, "vocab_size": int(vocab_size), "num_mel_bins": int(n_mels)}
    if num_speakers:
        kwargs["num_speakers"] = int(num_speakers)
    try:
        return FastSpeech2ConformerConfig(**kwargs)
    except Exception as exc:  # strict config: a wrong type names the field
        raise RecipeError(f"model.config: {str(exc).splitlines()[0]} {' '.join(str(exc).splitlines()[1:2])}".strip()) from None


# ------------------------------------------------------------------------------------------------
# Targets


def _frames(audio: torch.Tensor, mel: MelConfig) -> torch.Tensor:
    """(frames, n_fft) windows exactly as the mel front-end frames the signal."""
    pad = mel.n_fft // 2 if mel.framing == "center" else (mel.n_fft - mel.hop_length) // 2
    x = torch.nn.functional.pad(audio.float()[None, None], (pad, pad), mode="reflect")[0, 0]
    return x.unfold(0, mel.n_fft, mel.hop_length)


def frame_pitch(audio: torch.Tensor, mel: MelConfig, f0_min: float = 60.0, f0_max: float = 500.0,
                threshold: float = 0.45) -> torch.Tensor:
    """F0 in Hz per mel frame (0 = unvoiced), by normalised autocorrelation; cheap and dependency-free."""
    frames = _frames(audio, mel)
    frames = frames - frames.mean(dim=1, keepdim=True)
    n = frames.shape[1]
    spec = torch.fft.rfft(frames, n=2 * n)
    acf = torch.fft.irfft(spec.abs() ** 2, n=2 * n)[:, :n]
    energy = acf[:, :1].clamp(min=1e-12)
    acf = acf / energy / ((n - torch.arange(n)) / n).clamp(min=0.5)  # unbiased: long lags see fewer products
    lo, hi = int(mel.sample_rate / f0_max), min(int(mel.sample_rate / f0_min), n - 2)
    best, lag = acf[:, lo : hi + 1].max(dim=1)
    lag = (lag + lo).float()
    rms = energy[:, 0].sqrt()
    loud = rms > rms.max() * 10 ** (-35 / 20)  # 35 dB below the loudest frame: silence, never voiced
    f0 = mel.sample_rate / lag
    return torch.where((best > threshold) & loud, f0, torch.zeros_like(f0))


def frame_energy(audio: torch.Tensor, front_end: MelFrontEnd) -> torch.Tensor:
    """log L2 norm of each frame's linear magnitude spectrum (the mel front-end's own STFT)."""
    c = front_end.config
    x = audio.float()
    if c.framing == "hifigan":
        pad = (c.n_fft - c.hop_length) // 2
        x = torch.nn.functional.pad(x[None, None], (pad, pad), mode="reflect")[0, 0]
    spec = front_end.mel.spectrogram(x)  # (freq, frames), magnitude (power 1)
    return torch.log(spec.norm(dim=0).clamp(min=ENERGY_FLOOR))


def phoneme_average(values: torch.Tensor, durations: list[int], voiced_only: bool = False) -> np.ndarray:
    """Mean of per-frame values over each phoneme's frames (NaN where a phoneme has none to average)."""
    out = np.full(len(durations), np.nan, dtype=np.float64)
    v = values.double().numpy()
    start = 0
    for j, d in enumerate(durations):
        seg = v[start : start + d]
        if voiced_only:
            seg = seg[seg > 0]
            seg = np.log(seg) if seg.size else seg
        if seg.size:
            out[j] = float(seg.mean())
        start += d
    return out


@dataclasses.dataclass
class TargetStats:
    """Normalisation of the targets, from the training data (saved in acoustic.json)."""

    mel_mean: list[float]
    mel_std: list[float]
    pitch_mean: float
    pitch_std: float
    energy_mean: float
    energy_std: float
    f0_min: float = 60.0
    f0_max: float = 500.0

    @classmethod
    def fit(cls, mels: list[torch.Tensor], pitch: list[np.ndarray], energy: list[np.ndarray], f0_min: float,
            f0_max: float) -> TargetStats:
        """From (n_mels, frames) log-mels and per-phoneme log-F0 (NaN: unvoiced) / log-energy values."""
        allmel = torch.cat([m.double() for m in mels], dim=1)
        p = np.concatenate(pitch)
        p = p[np.isfinite(p)]
        e = np.concatenate(energy)
        e = e[np.isfinite(e)]
        return cls(
            mel_mean=allmel.mean(dim=1).tolist(), mel_std=allmel.std(dim=1).clamp(min=1e-3).tolist(),
            pitch_mean=float(p.mean()) if p.size else 0.0, pitch_std=float(max(p.std(), 1e-3)) if p.size else 1.0,
            energy_mean=float(e.mean()) if e.size else 0.0, energy_std=float(max(e.std(), 1e-3)) if e.size else 1.0,
            f0_min=f0_min, f0_max=f0_max,
        )

    def norm_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """(n_mels, frames) log-mel -> (frames, n_mels) normalised model target."""
        mean = torch.tensor(self.mel_mean, dtype=torch.float32)[:, None]
        std = torch.tensor(self.mel_std, dtype=torch.float32)[:, None]
        return ((mel.float() - mean) / std).T.contiguous()

    def denorm_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """(frames, n_mels) model output -> (n_mels, frames) log-mel."""
        mean = torch.tensor(self.mel_mean, dtype=torch.float32)[None, :]
        std = torch.tensor(self.mel_std, dtype=torch.float32)[None, :]
        return (mel.float() * std + mean).T.contiguous()

    def norm_pitch(self, values: np.ndarray) -> np.ndarray:
        return np.nan_to_num((values - self.pitch_mean) / self.pitch_std, nan=0.0)

    def norm_energy(self, values: np.ndarray) -> np.ndarray:
        return np.nan_to_num((values - self.energy_mean) / self.energy_std, nan=0.0)


def utterance_targets(audio: torch.Tensor, durations: list[int], front_end: MelFrontEnd, f0_min: float,
                      f0_max: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(log-mel (n_mels, F), per-phoneme log-F0 (NaN: unvoiced), per-phoneme log-energy) of one utterance."""
    with torch.no_grad():
        mel = front_end(audio)
        pitch = frame_pitch(audio, front_end.config, f0_min, f0_max)
        energy = frame_energy(audio, front_end)
    frames = mel.shape[-1]
    if pitch.numel() != frames or energy.numel() != frames or sum(durations) != frames:
        raise ModelError(f"internal: {frames} mel frames but {pitch.numel()} pitch, {energy.numel()} energy frames and "
                         f"durations summing to {sum(durations)}")
    return mel, phoneme_average(pitch, durations, voiced_only=True), phoneme_average(energy, durations)


# ------------------------------------------------------------------------------------------------
# The saved model


class AcousticModel:
    """FastSpeech2Conformer + its phoneme vocabulary, mel preset and target statistics."""

    def __init__(self, model: torch.nn.Module, vocab: PhonemeVocab, mel_config: MelConfig, stats: TargetStats,
                 speakers: list[str] | None = None, default_speaker: str | None = None) -> None:
        self.model = model
        self.vocab = vocab
        self.mel_config = mel_config
        self.stats = stats
        self.speakers = list(speakers) if speakers else None
        self.default_speaker = default_speaker if self.speakers else None
        if model.config.num_mel_bins != mel_config.n_mels or model.config.vocab_size != len(vocab):
            raise ModelError(f"acoustic model: the network ({model.config.num_mel_bins} mels, vocabulary "
                             f"{model.config.vocab_size}) does not fit its mel preset ({mel_config.n_mels} mels) or "
                             f"phoneme vocabulary ({len(vocab)})")
        if (model.config.num_speakers or 0) != len(self.speakers or []):
            raise ModelError(f"acoustic model: the network has {model.config.num_speakers or 0} speaker embeddings but "
                             f"{SPEAKERS_FILE} names {len(self.speakers or [])} speakers")
        if self.default_speaker is not None:
            self.speaker_id(self.default_speaker)

    def speaker_id(self, name: str | None) -> int | None:
        """Embedding id of a speaker name (None: the default speaker; no id for a single-voice model)."""
        if self.speakers is None:
            if name is not None:
                raise ModelError(f"speaker {name!r}: this acoustic model has a single voice (trained without acoustic.speakers)")
            return None
        name = self.default_speaker if name is None else name
        try:
            return self.speakers.index(name)
        except ValueError:
            shown = ", ".join(self.speakers[1:6]) + (", ..." if len(self.speakers) > 6 else "")
            raise ModelError(f"speaker {name!r}: not one of the model's {len(self.speakers) - 1} training speakers "
                             f"({shown}) or {UNKNOWN_SPEAKER}") from None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> AcousticModel:
        from transformers import FastSpeech2ConformerModel

        path = Path(path)
        if not (path / STATS_FILE).is_file() or not (path / "config.json").is_file():
            raise ModelError(f"{path}: not an acoustic model directory (no {STATS_FILE} or config.json)")
        raw = json.loads((path / STATS_FILE).read_text(encoding="utf-8"))
        stats = TargetStats(**raw["stats"])
        model = FastSpeech2ConformerModel.from_pretrained(str(path)).to(device).eval()
        speakers = default = None
        if (path / SPEAKERS_FILE).is_file():
            saved = json.loads((path / SPEAKERS_FILE).read_text(encoding="utf-8"))
            speakers, default = saved["speakers"], saved["default"]
        return cls(model, PhonemeVocab.load(path), MelConfig.load(path), stats, speakers, default)

    def save_pretrained(self, path: str | Path) -> None:
        from pipeline.io import write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path))  # safetensors (transformers 5 writes nothing else)
        self.vocab.save(path)
        self.mel_config.save(path)
        write_json(path / STATS_FILE, {"stats": dataclasses.asdict(self.stats), "mel_preset": self.mel_config.name})
        if self.speakers:
            write_json(path / SPEAKERS_FILE, {"speakers": self.speakers, "default": self.default_speaker})

    # -------------------------------------------------------------------------------------
    def phonemes(self, text: str, voice: str | None = None) -> list[str]:
        """Text -> phoneme tokens, as in training (unknown phonemes become <unk>, with a warning)."""
        phonemes = text_to_phonemes(text, voice or self.vocab.voice)
        unknown = self.vocab.unknown(phonemes)
        if unknown:
            logger.warning("phonemes unseen in training (read as <unk>): %s", " ".join(unknown))
        return phonemes

    @torch.no_grad()
    def mel(self, text: str, speaking_rate: float = 1.0, voice: str | None = None, speaker: str | None = None,
            ) -> torch.Tensor:
        """Log-mel (n_mels, frames) in the model's mel preset. speaking_rate 2.0: twice as fast; `speaker`:
        a training speaker of a multi-speaker model (default: its default speaker)."""
        if not speaking_rate > 0:
            raise ModelError(f"speaking rate must be positive, got {speaking_rate}")
        sid = self.speaker_id(speaker)
        ids = torch.tensor([self.vocab.encode(self.phonemes(text, voice))], dtype=torch.long)
        device = next(self.model.parameters()).device
        extra = {} if sid is None else {"speaker_ids": torch.tensor([[sid]], dtype=torch.long, device=device)}
        was_training = self.model.training
        old_speed = self.model.config.speaking_speed
        self.model.eval()
        self.model.config.speaking_speed = 1.0 / float(speaking_rate)  # transformers multiplies durations by it
        try:
            out = self.model(input_ids=ids.to(device), return_dict=True, **extra)
        finally:
            self.model.config.speaking_speed = old_speed
            self.model.train(was_training)
        mel = self.stats.denorm_mel(out.spectrogram[0].cpu())
        return mel.clamp(min=self.mel_config.log_floor)  # a vocoder refuses values below its preset's floor


class TextToSpeech:
    """An acoustic model and a vocoder that share a mel preset: text -> waveform."""

    def __init__(self, acoustic: AcousticModel, vocoder: Any, names: tuple[str, str] = ("acoustic model", "vocoder")) -> None:
        try:
            check_compatible(acoustic.mel_config, vocoder.mel_config)
        except ModelError as exc:
            raise ModelError(f"{names[0]} and {names[1]} do not fit together: {exc}") from None
        self.acoustic = acoustic
        self.vocoder = vocoder

    @classmethod
    def from_pretrained(cls, acoustic: str | Path, vocoder: str | Path) -> TextToSpeech:
        from pipeline.tts.inference import Vocoder

        return cls(AcousticModel.from_pretrained(acoustic), Vocoder.from_pretrained(vocoder), (str(acoustic), str(vocoder)))

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.sample_rate)

    def __call__(self, text: str, speaking_rate: float = 1.0, steps: int | None = None, sampler: str | None = None,
                 seed: int = 0, voice: str | None = None, speaker: str | None = None) -> np.ndarray:
        """Float32 waveform at `sample_rate` (sampler/steps: the vocoder's defaults when None)."""
        mel = self.acoustic.mel(text, speaking_rate=speaking_rate, voice=voice, speaker=speaker)
        wave = self.vocoder(mel, mel_config=self.acoustic.mel_config, sampler=sampler, steps=steps, seed=seed)
        return wave.numpy().astype(np.float32)
