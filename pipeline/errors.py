"""User-facing errors: one line that names the file, row or key, never a deep traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """An error caused by the user's input (recipe, data, model directory).

    Scripts catch it and print `error: <message>` on one line with exit code 2.
    """


class RecipeError(PipelineError):
    """A malformed recipe or an unknown/invalid key."""


class DataError(PipelineError):
    """A data spec, manifest or audio file that cannot be used."""


class ModelError(PipelineError):
    """A model, tokenizer or option that does not fit together."""


class CheckpointError(PipelineError):
    """A training checkpoint that cannot be resumed from (corrupt, truncated or tampered with)."""
