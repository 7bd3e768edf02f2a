"""Tempo ensemble: greedy CTC at several speaking rates, the transcript the rates agree on most.

A CTC model errs most where speech is fast for its frame rate: the transcript needs nearly as many
labels as the model has output frames (recipes/asr/README.md measures it on held-out voices). A
log-mel front end can hear any utterance faster or slower, pitch unchanged, by moving its hop: at
tempo 0.875 the hop is 7/8 of the trained one, so every second of audio gives 8/7 as many frames.
Each tempo's greedy transcript is a candidate; each candidate is scored by its CTC log-likelihood
under every tempo's output, per frame (so that slow tempos, with more frames, do not outweigh the
others), summed over the tempos; the best one wins. This is a product of experts over one model's
views of the utterance, with no language model and no training; it costs one forward pass per tempo.

Only a feature extractor with a configurable hop (`hop_length`: Parakeet's log-mels) can hear an
utterance at another tempo this way; others (wav2vec 2.0's raw waveform, Wav2Vec2-BERT's fixed
10-ms frames) are refused with a one-line error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import ModelError
from pipeline.evaluation.inference import Transcriber
from pipeline.evaluation.timestamps import Timed

MIN_TEMPO, MAX_TEMPO = 0.5, 2.0


def parse_tempos(text: str | Sequence[float]) -> list[float]:
    """`"0.875,1,1.125"` (or numbers) -> sorted distinct tempos; 1.0 is always one of them."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        tempos = {float(t) for t in items if str(t).strip()}
    except ValueError as e:
        raise ModelError(f"--tempos: expected comma-separated numbers such as 0.875,1,1.125, got {text!r}") from e
    bad = [t for t in tempos if not MIN_TEMPO <= t <= MAX_TEMPO]
    if bad:
        raise ModelError(f"--tempos: {bad[0]} is outside [{MIN_TEMPO}, {MAX_TEMPO}] (1 = as recorded, below 1 = slower)")
    return sorted(tempos | {1.0})


def add_tempos_argument(parser: Any) -> None:
    """The `--tempos` option of scripts/evaluate.py and scripts/transcribe.py (parse it with `parse_tempos`)."""
    parser.add_argument("--tempos", default=None, metavar="T1,T2,...",
                        help="greedy decoding at these speaking rates too (1: as recorded, 0.875: 8/7 the frames), "
                             "keeping the transcript they agree on most; Parakeet (log-mel) models only, "
                             "e.g. 0.875,0.9375,1,1.0625,1.125 (docs/evaluation.md)")


class TempoEnsembleTranscriber(Transcriber):
    """`Transcriber` that decodes each utterance at several tempos and keeps the candidate they agree on most.

    Batches are formed as the plain greedy `Transcriber` forms them; every tempo runs the same batches.
    With `tempos=[1.0]` the transcripts are the plain greedy ones.
    """

    def __init__(self, model: Any, feature_extractor: Any, tokenizer: Any, tempos: Sequence[float],
                 **kwargs: Any) -> None:
        super().__init__(model, feature_extractor, tokenizer, **kwargs)
        hop = getattr(feature_extractor, "hop_length", None)
        if not isinstance(hop, int) or not hasattr(feature_extractor, "to_dict"):
            raise ModelError(f"--tempos needs a feature extractor with a configurable hop (Parakeet's log-mels); "
                             f"{type(feature_extractor).__name__} has none")
        self.tempos = parse_tempos(tempos)
        self.hops = [max(1, round(hop * t)) for t in self.tempos]
        settings = feature_extractor.to_dict()
        self.members: list[Transcriber] = [
            self if h == hop else
            Transcriber(self.model, type(feature_extractor).from_dict({**settings, "hop_length": h}), tokenizer, **kwargs)
            for h in self.hops
        ]

    def transcribe(self, audios: Sequence[np.ndarray], progress: bool = False) -> list[str]:
        """Transcripts in input order. A few batches at a time go through every tempo and are decided, so
        memory holds the logits of those batches only (a large vocabulary times five tempos adds up)."""
        batches = self.batches(audios)
        per_round = 4 * self.workers
        rounds = range(0, len(batches), per_round)
        if progress:
            from tqdm.auto import tqdm

            rounds = tqdm(rounds, desc=f"transcribing at {len(self.tempos)} tempos", unit="round")
        out: list[str] = [""] * len(audios)
        for start in rounds:
            group = batches[start:start + per_round]
            # logits (frames of audio x vocab) of each utterance of the group at every tempo
            logits_at: dict[int, list[torch.Tensor]] = {i: [] for b in group for i in b}
            for member in self.members:
                for b, (logits, mask) in zip(group, member.forward_many([[audios[i] for i in b] for b in group]),
                                             strict=True):
                    for i, row, valid in zip(b, logits, mask, strict=True):
                        logits_at[i].append(row[: int(valid.sum())].float().cpu())
            for i, rows in logits_at.items():
                out[i] = self.choose(rows)
        return out

    def transcribe_words(self, audios: Sequence[np.ndarray], progress: bool = False, on_speech: bool = True
                         ) -> list[Timed]:
        raise ModelError("word timestamps need decoding at one tempo: leave out --tempos")

    @torch.inference_mode()
    def choose(self, logits: Sequence[torch.Tensor]) -> str:
        """The candidate (a tempo's greedy transcript) with the highest summed per-frame CTC log-likelihood.

        A candidate with more labels than a tempo's frames can carry scores minus infinity there; if every
        candidate does somewhere, the transcript at tempo 1 is kept.
        """
        paths: dict[tuple[int, ...], torch.Tensor] = {}  # labels -> the first greedy path that gave them
        for row in logits:
            path = row.argmax(dim=-1)
            labels = tuple(int(i) for i in torch.unique_consecutive(path) if int(i) != self.blank)
            paths.setdefault(labels, path)
        candidates = list(paths)
        scores = torch.zeros(len(candidates), dtype=torch.float64)
        if len(candidates) > 1:
            lengths = torch.tensor([len(c) for c in candidates])
            targets = torch.tensor([i for c in candidates for i in c], dtype=torch.long)
            for row in logits:
                frames, lp = row.shape[0], F.log_softmax(row, dim=-1)
                if frames == 0:
                    continue
                nll = F.ctc_loss(lp[:, None].expand(frames, len(candidates), lp.shape[1]), targets,
                                 torch.full((len(candidates),), frames), lengths, blank=self.blank, reduction="none")
                scores -= nll.double() / frames
        if not bool(torch.isfinite(scores).any()):
            path = logits[self.tempos.index(1.0)].argmax(dim=-1)
        else:
            path = paths[candidates[int(scores.argmax())]]
        return self.tokenizer.decode(path.tolist())
