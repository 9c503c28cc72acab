"""Checks of a reply against a reference (math answers, function calls, code, text), shared by distill and evaluate."""
