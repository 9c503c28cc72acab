"""Distillation: the seed model rewrites references; checks decide what is kept."""
