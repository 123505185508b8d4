"""Sona: a self-hosted transcription daemon."""

__version__ = "0.1.0"
