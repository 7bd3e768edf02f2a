"""speech-pipeline."""
