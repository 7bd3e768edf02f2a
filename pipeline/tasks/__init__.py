"""Tasks the shared training loop serves, by the recipe's `task` key."""

from __future__ import annotations

from pipeline.config import Recipe
from pipeline.errors import RecipeError
from pipeline.tasks.base import Task


def build_task(recipe: Recipe) -> Task:
    if recipe.task == "asr":
        from pipeline.tasks.asr import ASRTask

        return ASRTask(recipe)
    if recipe.task == "ssl":
        from pipeline.tasks.ssl import SSLTask

        return SSLTask(recipe)
    if recipe.task == "vocoder":
        from pipeline.tasks.vocoder import VocoderTask

        return VocoderTask(recipe)
    if recipe.task == "acoustic":
        from pipeline.tasks.acoustic import AcousticTask

        return AcousticTask(recipe)
    raise RecipeError(f"task: unknown task {recipe.task!r} (available: asr, ssl, vocoder, acoustic)")
