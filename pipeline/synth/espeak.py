"""ctypes wrapper around libespeak-ng shipped by the ``espeakng-loader`` wheel.

Why ctypes: there is no system espeak and no internet, but the wheel carries the
shared library and its data. libespeak-ng keeps all of its state in globals, so a
single process-wide engine is created lazily and every call goes through one lock.

Behaviour of libespeak-ng 1.52 worth knowing (checked against the library):

* ``espeak_SetVoiceByName("en-us+nonexistent")`` returns EE_OK and silently drops
  the variant; only ``espeak_GetCurrentVoice().identifier`` ("gmw/en-US+f3") shows
  whether the variant was applied. Variant names are case-sensitive file names.
* ``espeak_EVENT.sample`` is the absolute sample index from the start of the message;
  ``audio_position`` is the same in milliseconds. ``id.string`` is 8 bytes that are
  *not* zero-padded after the terminator (garbage follows), and a ``c_char * 8``
  field would be silently truncated by ctypes anyway, so it is read as raw bytes.
* Each ``espeak_SetVoiceByName`` queues an espeakEVENT_SAMPLERATE event; the first audio
  buffer's event list has room for ~30 events, so after many voice changes the first
  phoneme events of the next utterance are silently dropped. A throwaway empty synthesis
  flushes them.
* Rate/pitch/range survive ``espeak_SetVoiceByName``, so they are set on every call.
* Audio is not bit-reproducible across calls: pitch flutter/phase state carries over
  between utterances and is not reset by ``espeak_ng_SetRandSeed`` or re-initialising.
  It is reproducible for an identical sequence of calls in a fresh process.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 22050

# espeak-ng API constants (speak_lib.h, API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000  # otherwise a missing data dir calls exit() in the library
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
# Volume 100 makes ~20 of the variants clip (saturate at int16) on ordinary sentences; at 40
# none of the listed variants clip and the quietest still peaks near 0.1 (ample for 16 bit).
_VOLUME_LEVEL = 40
# Every espeak_SetVoiceByName queues a SAMPLERATE event that is delivered with the first
# audio buffer of the next synthesis, whose event list holds only ~30 entries: after many
# voice changes (list_voices, phonemize) the first phoneme events would be dropped.
_MAX_QUEUED_VOICE_CHANGES = 8

# Accents as espeak voice names (lang/gmw/*). "en" is British English ("en-gb" is not a
# voice name). en-shaw is left out: it is a spelling system, not an accent.
ACCENTS: tuple[str, ...] = (
    "en-us",
    "en-us-nyc",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)

# Variants (voices/!v) that give a plain human-like timbre. Whisper, croak, robot,
# echo-heavy, tonal and joke variants are left out: they make poor ASR training data;
# "antonio" is left out because it is ~3x louder than the rest and clips.
MALE_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "Alex", "Andy", "Denis", "Diogo", "Gene", "Henrique", "Hugo", "Lee", "Marco",
    "Mario", "Michael", "Mike", "adam", "benjamin", "boris", "david", "ed",
    "edward", "edward2", "grandpa", "gustave", "klatt", "klatt2", "klatt3", "marcelo",
    "max", "michel", "miguel", "mike2", "paul", "pedro", "quincy", "rob", "robert",
    "sandro", "travis", "victor",
)  # fmt: skip
FEMALE_VARIANTS: tuple[str, ...] = (
    "f1", "f2", "f3", "f4", "f5",
    "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "grandma", "linda",
    "steph", "steph2", "steph3",
)  # fmt: skip

# Variants whose formant tables are (nearly) identical, differing only in pitch, flutter or
# synthesiser: they are one timbre, so a held-out test timbre must take its whole family.
VARIANT_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("Diogo", "Henrique", "Hugo", "michel", "miguel"),
    ("klatt", "klatt2", "klatt3"),
    ("adam", "benjamin"),
    ("edward", "edward2"),
    ("Mario", "Michael"),
    ("m7", "m8"),
    ("rob", "robert"),
    ("m3", "Mike"),
    ("m4", "grandpa"),
    ("steph", "steph2", "steph3"),
    ("f4", "aunty"),
)


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_void_p),  # const char*; void* so ctypes never dereferences it
        ("string", ctypes.c_ubyte * 8),  # raw bytes: c_char*8 would stop at the first NUL
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT``: 40 bytes on LP64 (user_data is pointer-aligned at offset 24)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # absolute sample index within the message
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """``espeak_VOICE`` as returned by ``espeak_GetCurrentVoice``."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class Synthesis:
    """One synthesised utterance; phoneme spans are in samples of ``audio``."""

    audio: np.ndarray  # float32, mono, [-1, 1]
    sample_rate: int
    phonemes: list[tuple[str, int, int]] = field(default_factory=list)  # (mnemonic, start, end)
    # where each word starts: (1-based character position in the text, its length in characters, sample)
    words: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.audio) / self.sample_rate


class _Engine:
    """The one libespeak-ng instance of this process; use only while holding ``_LOCK``."""

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_GetCurrentVoice.argtypes = []
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        self.has_text_to_phonemes = hasattr(lib, "espeak_TextToPhonemes")
        if self.has_text_to_phonemes:
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib = lib
        self.data_path = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT
        )
        if rate != SAMPLE_RATE:
            raise RuntimeError(
                f"espeak_Initialize returned {rate} (expected {SAMPLE_RATE} Hz) for {self.data_path}"
            )
        self._chunks: list[np.ndarray] = []
        self._marks: list[tuple[str, int]] = []
        self._words: list[tuple[int, int, int]] = []
        self._error: BaseException | None = None
        self._voice_changes = 0  # each queues an event that is only delivered by the next synth
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: C holds a raw pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: ctypes._Pointer, n: int, events: ctypes._Pointer) -> int:
        """Collect audio and phoneme events; exceptions here would be swallowed by ctypes."""
        try:
            if wav and n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while events:
                ev = events[i]
                if ev.type == _EVENT_LIST_TERMINATED:
                    break
                if ev.type == _EVENT_PHONEME:
                    raw = bytes(ev.id.string).split(b"\0", 1)[0]
                    self._marks.append((raw.decode("utf-8", "replace"), ev.sample))
                elif ev.type == _EVENT_WORD:
                    self._words.append((int(ev.text_position), int(ev.length), int(ev.sample)))
                i += 1
            return 0
        except BaseException as exc:  # noqa: BLE001 - re-raised after espeak_Synth returns
            self._error = exc
            return 1  # abort synthesis

    def set_voice(self, voice: str) -> None:
        """Select ``accent[+variant]``; raise ValueError unless both parts really loaded."""
        rc = self.lib.espeak_SetVoiceByName(voice.encode())
        self._voice_changes += 1
        if rc != 0:
            raise ValueError(f"espeak-ng voice {voice!r} failed to load (error {rc})")
        if "+" in voice:
            variant = voice.split("+", 1)[1]
            current = self.lib.espeak_GetCurrentVoice()
            ident = (current.contents.identifier or b"").decode() if current else ""
            if not ident.endswith("+" + variant):
                raise ValueError(
                    f"espeak-ng voice {voice!r} failed to load (variant {variant!r} not applied)"
                )

    def synth(self, text: str, rate: int, pitch: int, pitch_range: int) -> Synthesis:
        """Synthesise ``text`` with the current voice."""
        for param, value in ((_RATE, rate), (_VOLUME, _VOLUME_LEVEL), (_PITCH, pitch), (_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        if self._voice_changes > _MAX_QUEUED_VOICE_CHANGES:
            self.lib.espeak_Synth(b"\0", 1, 0, 1, 0, _CHARS_UTF8, None, None)  # deliver (and drop) them
        self._voice_changes = 0
        self._chunks, self._marks, self._words, self._error = [], [], [], None
        data = text.encode("utf-8") + b"\0"
        rc = self.lib.espeak_Synth(data, len(data), 0, 1, 0, _CHARS_UTF8, None, None)
        if self._error is not None:
            raise RuntimeError(f"espeak synth callback failed: {self._error!r}") from self._error
        if rc != 0:
            raise RuntimeError(f"espeak_Synth returned {rc} for {text!r}")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        audio = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
        n = len(audio)
        phonemes: list[tuple[str, int, int]] = []
        marks = self._marks
        for k, (name, start) in enumerate(marks):
            end = marks[k + 1][1] if k + 1 < len(marks) else n  # the last span runs to the end
            start, end = min(max(start, 0), n), min(max(end, 0), n)
            if name:
                phonemes.append((name, start, max(start, end)))
        words = [(pos, length, min(max(sample, 0), n)) for pos, length, sample in self._words]
        self._chunks, self._marks, self._words = [], [], []
        return Synthesis(audio=audio, sample_rate=SAMPLE_RATE, phonemes=phonemes, words=words)

    def text_to_phonemes(self, text: str, ipa: bool) -> str:
        """Run ``espeak_TextToPhonemes`` clause by clause (it advances the text pointer)."""
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        mode = _PHONEMES_IPA if ipa else 0
        clauses: list[str] = []
        while ptr.value:
            out = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
            if out:
                clauses.append(out.decode("utf-8", "replace").strip())
        return " ".join(c for c in clauses if c)


_LOCK = threading.RLock()
_ENGINE: _Engine | None = None


def _reset_lock_after_fork() -> None:
    """A forked child must not inherit a lock held by another thread of the parent."""
    global _LOCK
    _LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)


def _engine() -> _Engine:
    """Create the process-wide engine on first use (caller holds ``_LOCK``)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def list_voices() -> list[str]:
    """English ``accent+variant`` names whose accent and variant both load (cached per process)."""
    return list(_loadable_voices())


@functools.cache
def _loadable_voices() -> tuple[str, ...]:
    """Try every accent x variant once; espeak reports failure only via rc/identifier."""
    voices: list[str] = []
    with _LOCK:
        eng = _engine()
        for accent in ACCENTS:
            for variant in MALE_VARIANTS + FEMALE_VARIANTS:
                name = f"{accent}+{variant}"
                try:
                    eng.set_voice(name)
                except ValueError:
                    continue
                voices.append(name)
    return tuple(voices)


def variant_family(variant: str) -> str:
    """Name of the timbre family of ``variant`` (its first member; itself if it has no siblings)."""
    for family in VARIANT_FAMILIES:
        if variant in family:
            return family[0]
    return variant


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> Synthesis:
    """Synthesise ``text`` at 22.05 kHz with espeak phoneme spans (mnemonics, with stress marks).

    ``rate`` is words per minute (80-450); ``pitch`` and ``pitch_range`` are 0-100.
    Raises ValueError naming the voice if it (or its variant) does not load.
    """
    if not 80 <= rate <= 450:
        raise ValueError(f"rate must be in 80..450 wpm, got {rate}")
    if not (0 <= pitch <= 100 and 0 <= pitch_range <= 100):
        raise ValueError(f"pitch and pitch_range must be in 0..100, got {pitch}, {pitch_range}")
    with _LOCK:
        eng = _engine()
        eng.set_voice(voice)
        return eng.synth(text, rate, pitch, pitch_range)


def version() -> str:
    """libespeak-ng version string, recorded with corpora because output depends on it."""
    with _LOCK:
        return (_engine().lib.espeak_Info(None) or b"").decode()


def phonemize(text: str, voice: str = "en-us", ipa: bool = True) -> str:
    """Phoneme string for ``text`` via ``espeak_TextToPhonemes`` (IPA, or espeak mnemonics)."""
    with _LOCK:
        eng = _engine()
        if not eng.has_text_to_phonemes:
            raise RuntimeError("this libespeak-ng has no espeak_TextToPhonemes")
        eng.set_voice(voice)
        return eng.text_to_phonemes(text, ipa)
