"""Closed-set decoding: every utterance says one of a known list of phrases (digits, commands, keywords),
and the phrase the model finds most probable is the transcript — the "grammar" of PocketSphinx-style digit
and command recognisers.

Exact under that assumption: a transcript's CTC loss is minus the log-probability the model gives it,
summed over all its alignments, so the phrase with the lowest loss is the model's most probable one.
Greedy decoding and beam search may spell a word that is not in the list, or nothing; this never does.
An utterance too short for every phrase (fewer frames than any phrase needs) gets an empty transcript.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from pipeline.errors import ModelError
from pipeline.evaluation.inference import Transcriber
from pipeline.evaluation.timestamps import Timed, path_words, timed


def phrase_ids(tokenizer: Any, phrases: Sequence[str]) -> list[list[int]]:
    """Token ids of each phrase; a phrase the vocabulary cannot spell is a one-line error naming it."""
    unk = getattr(tokenizer, "unk_token_id", None)
    out = []
    for phrase in phrases:
        ids = list(tokenizer(phrase).input_ids)
        if not ids or (unk is not None and unk in ids):
            raise ModelError(f"--choices: the model's vocabulary cannot spell the phrase {phrase!r}")
        out.append(ids)
    return out


class ChoicesTranscriber(Transcriber):
    """`Transcriber` (same batching and masking) that returns, per utterance, the most probable of `phrases`."""

    def __init__(self, model: Any, feature_extractor: Any, tokenizer: Any, phrases: Sequence[str], **kwargs: Any) -> None:
        super().__init__(model, feature_extractor, tokenizer, **kwargs)
        self.phrases = list(dict.fromkeys(phrases))  # once each, in the order given
        if not self.phrases:
            raise ModelError("--choices: no phrases to choose from")
        ids = phrase_ids(tokenizer, self.phrases)
        self._targets = torch.tensor([i for x in ids for i in x], dtype=torch.long)
        self._target_lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
        self._starts = [0, *torch.cumsum(self._target_lengths, 0).tolist()[:-1]]

    def phrase_losses(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Minus the log-probability of each phrase given one utterance's (frames, vocab) log-probabilities."""
        frames, n = log_probs.shape[0], len(self.phrases)
        return F.ctc_loss(log_probs[:, None].expand(frames, n, log_probs.shape[1]), self._targets,
                          torch.full((n,), frames, dtype=torch.long), self._target_lengths, blank=self.blank,
                          reduction="none", zero_infinity=False)

    @torch.inference_mode()
    def choose(self, logits: torch.Tensor) -> int | None:
        """Index of the most probable phrase for one utterance's (frames, vocab) logits; None if none fits."""
        losses = self.phrase_losses(logits.log_softmax(-1))
        best = int(losses.argmin())
        return best if torch.isfinite(losses[best]) else None

    def rows(self, logits: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return [row[: int(m.sum())] for row, m in zip(logits.float().cpu(), mask.cpu(), strict=True)]

    def logits_to_text(self, logits: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [self.phrases[i] if (i := self.choose(row)) is not None else "" for row in self.rows(logits, mask)]

    @torch.inference_mode()
    def logits_to_words(self, logits: torch.Tensor, mask: torch.Tensor) -> list[Timed]:
        """The chosen phrases, their words placed by the phrase's most probable alignment (CTC forced alignment)."""
        out = []
        for row in self.rows(logits, mask):
            best = self.choose(row)
            if best is None:
                out.append(timed("", [], self.frame_seconds()))
                continue
            targets = self._targets[self._starts[best]:self._starts[best] + self._target_lengths[best]]
            log_probs = row.log_softmax(-1)
            path, _ = AF.forced_align(log_probs[None], targets[None].int(), blank=self.blank)
            out.append(timed(self.phrases[best], path_words(path[0].tolist(), self.tokenizer, self.blank, log_probs),
                             self.frame_seconds()))
        return out
