"""Text-to-speech components: mel front-ends, the DiffWave diffusion vocoder, samplers and metrics.

- `pipeline.tts.mel`: `MelConfig` presets ("speecht5", "ljspeech"/"hifigan"), `MelFrontEnd`.
- `pipeline.tts.diffwave`: `DiffWave` (diffusers `ModelMixin`/`ConfigMixin`), size presets.
- `pipeline.tts.sampling`: training schedule, fast/DDIM/DPM-Solver/DDPM samplers, PriorGrad prior.
- `pipeline.tts.spectral`: SpecGrad-style spectral prior (noise shaped by the mel's envelope).
- `pipeline.tts.metrics`: log-mel L1, MR-STFT, PESQ, STOI, real-time factor, Griffin-Lim floor.
- `pipeline.tts.inference`: `Vocoder` (network + mel preset + sampling settings, save/load).
- `pipeline.tts.phonemes`: espeak-ng phoneme events, the phoneme vocabulary, per-phoneme durations.
- `pipeline.tts.acoustic`: FastSpeech2Conformer text -> mel (`AcousticModel`) and `TextToSpeech`.
- `pipeline.tts.roundtrip`: round-trip intelligibility (synthesise, transcribe with our ASR, WER).
The training tasks are `pipeline.tasks.vocoder` (`task: vocoder`) and `pipeline.tasks.acoustic` (`task: acoustic`).
"""

from pipeline.tts.diffwave import PRESETS as MODEL_PRESETS
from pipeline.tts.diffwave import DiffWave
from pipeline.tts.inference import Vocoder, VocoderSettings
from pipeline.tts.mel import PRESETS as MEL_PRESETS
from pipeline.tts.mel import MelConfig, MelFrontEnd, check_compatible, get_mel_config
from pipeline.tts.sampling import SAMPLERS, sample, training_scheduler

__all__ = [
    "MEL_PRESETS", "MODEL_PRESETS", "SAMPLERS", "DiffWave", "MelConfig", "MelFrontEnd", "Vocoder", "VocoderSettings",
    "check_compatible", "get_mel_config", "sample", "training_scheduler",
]
