"""Evaluation: metrics, judges and built-in probe sets for comparing seed, SFT and SDFT models."""
