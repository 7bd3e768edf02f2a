"""speech-pipeline: fine-tune, evaluate and synthesise speech with the Hugging Face stack."""

__version__ = "0.1.0"
