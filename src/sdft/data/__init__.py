"""Task data: loading, validation, built-in sets."""

from sdft.data.example import DataError, Example, Problem

__all__ = ["DataError", "Example", "Problem"]
