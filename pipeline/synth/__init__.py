"""Offline synthetic speech: espeak-ng via ctypes, a sentence generator, and a corpus writer.

``pipeline.synth.corpus`` (which imports torch) is not imported here so that the
lightweight synthesiser stays cheap to import.
"""

from pipeline.synth.espeak import Synthesis, list_voices, phonemize, synthesize
from pipeline.synth.sentences import WORDS, make_sentences

__all__ = ["WORDS", "Synthesis", "list_voices", "make_sentences", "phonemize", "synthesize"]
