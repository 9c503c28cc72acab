"""The one in-memory shape every data source is turned into."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdft.core.chat import chat_messages
from sdft.core.errors import InputError


@dataclass
class Example:
    """One task example: an instruction (with optional input) and its reference response.

    `row` is the 1-based row of the source file (or index for generated data), so that every
    later stage can point back at where an example came from.
    """

    id: str
    instruction: str
    response: str = ""
    input: str = ""
    system: str | None = None
    history: list[dict] = field(default_factory=list)  # earlier chat turns, {"role", "content"}
    row: int = 0

    @property
    def prompt(self) -> str:
        """The user turn as the model sees it when trained or evaluated."""
        if self.input.strip():
            return f"{self.instruction}\n\n{self.input}"
        return self.instruction

    def messages(self, system: str | None = None) -> list[dict]:
        """Chat messages for the prompt (no assistant reply); `system` replaces the example's own."""
        return chat_messages(self.prompt, system if system is not None else self.system, self.history)


@dataclass
class Problem:
    """One thing wrong with an input: where, which field, what."""

    file: str
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


class DataError(InputError):
    """Bad input. Carries every problem found so they can be reported together (exit code 2)."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__(self.render())

    def render(self, limit: int = 50) -> str:
        lines = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problems")
        return "\n".join(lines)
