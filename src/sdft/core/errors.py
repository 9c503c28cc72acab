"""The two kinds of failure the CLI tells apart.

`InputError`: something the user gave is wrong (a file, a row, a field, a flag, a config key). The
CLI prints it in one line and exits 2; nothing has been written. `SetupError`: the environment lacks
something the request needs (an optional package, a GPU); one line, exit 1. Anything else is a bug
in sdft or a library: the CLI prints the traceback and exits 1.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message names the file, row and field, or the flag or config key."""


class SetupError(RuntimeError):
    """The machine lacks what was asked for (an optional extra, a device); the message says how to get it."""
