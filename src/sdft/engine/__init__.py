"""Batched decoding and likelihood scoring: the model-facing machinery of every stage."""
