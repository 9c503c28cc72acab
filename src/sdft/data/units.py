"""A built-in, offline task the embedded 135M model learns within minutes: unit conversion.

"How many millimetres are in 74 centimetres?" -> "74 cm x 10 = 740 mm.\nThe answer is 740." Each question
converts a whole number of one unit into a smaller one by a fixed factor. The skill has two parts a
fine-tuned model can pick up from a few hundred rows: the factor of each unit pair, and the multiplication.
Measured on the embedded SmolLM2-135M-Instruct (greedy, the math suite's prompt, 128 held-out questions): the
seed answers 8.6% right (it converts to the wrong unit, or says the factor and stops), plain SFT with LoRA
at learning rate 1e-3 for 32 steps of 8 on 256 rows 51.6%. The references are terse and abbreviated, in a
style the model does not write unprompted, as real task data often is.

Splits: each (unit pair, quantity) belongs to the train or the test split by a fixed hash, so a test
question never converts a quantity that training saw for that pair, in any wording. The same seed and
split always give the same list; the math suite's `builtin:units?split=test` is the held-out set.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from sdft.core.errors import InputError
from sdft.data.example import Example


@dataclass(frozen=True)
class Conversion:
    unit: str  # plural, as the question says it
    short: str  # as the answer writes it
    to: str
    to_short: str
    factor: int
    most: int  # largest quantity asked: times tables stay within what a reply can show in one line

    def answer(self, k: int) -> str:
        return f"{k} {self.short} x {self.factor} = {k * self.factor} {self.to_short}.\nThe answer is {k * self.factor}."


CONVERSIONS = (
    Conversion("kilometres", "km", "metres", "m", 1000, 99),
    Conversion("metres", "m", "centimetres", "cm", 100, 99),
    Conversion("centimetres", "cm", "millimetres", "mm", 10, 99),
    Conversion("kilograms", "kg", "grams", "g", 1000, 99),
    Conversion("litres", "L", "millilitres", "mL", 1000, 99),
    Conversion("tonnes", "t", "kilograms", "kg", 1000, 99),
    Conversion("hours", "h", "minutes", "min", 60, 24),
    Conversion("minutes", "min", "seconds", "s", 60, 24),
    Conversion("days", "d", "hours", "h", 24, 20),
    Conversion("weeks", "wk", "days", "d", 7, 30),
    Conversion("years", "yr", "months", "mo", 12, 20),
    Conversion("feet", "ft", "inches", "in", 12, 20),
    Conversion("yards", "yd", "feet", "ft", 3, 40),
    Conversion("gallons", "gal", "quarts", "qt", 4, 40),
    Conversion("dozen", "dozen", "eggs", "eggs", 12, 20),
)

QUESTIONS = (
    "How many {to} are in {k} {unit}?",
    "Convert {k} {unit} to {to}.",
    "What is {k} {unit} in {to}?",
    "A recipe needs {k} {unit}. How many {to} is that?",
    "Express {k} {unit} in {to}.",
)
SPLITS = ("train", "test")
TEST_SHARE = 4  # one (pair, quantity) in four is held out


def split_of(conversion: Conversion, k: int) -> str:
    return "test" if zlib.crc32(f"{conversion.unit}>{conversion.to}:{k}".encode()) % TEST_SHARE == 0 else "train"


def generate_units(n: int = 200, seed: int = 0, split: str = "train") -> list[Example]:
    """`n` distinct conversion questions of `split` with terse worked answers."""
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    pool = [(c, k, q) for c in CONVERSIONS for k in range(2, c.most + 1) if split_of(c, k) == split
            for q in QUESTIONS]
    if n > len(pool):
        raise InputError(f"the {split} split has {len(pool)} distinct questions; asked for n={n}")
    rng = random.Random(f"units-{seed}")
    # Drawn without repeats from every (pair, quantity, wording): pairs with more quantities come up more.
    picked = rng.sample(pool, n)
    return [Example(id=str(i), instruction=q.format(k=k, unit=c.unit, to=c.to), response=c.answer(k), row=i)
            for i, (c, k, q) in enumerate(picked, start=1)]
