"""Task data: loading, validation, built-in sets."""

from sdft.data.arithmetic import generate_arithmetic
from sdft.data.example import DataError, Example, Problem
from sdft.data.load import load_examples, parse_columns

__all__ = ["DataError", "Example", "Problem", "generate_arithmetic", "load_examples", "parse_columns"]
