"""SDFT: Self-Distillation Fine-Tuning for chat language models."""

__version__ = "0.1.0"
