"""A built-in, offline task: GSM8K-style arithmetic word problems with worked answers.

Used by the demo and tests (`builtin:arithmetic`), so it must be deterministic for a seed and need
nothing downloaded. Each problem takes 1 to 3 steps; the reference answer is written like GSM8K's:
one sentence per step showing its arithmetic ("a x b = c"), then "The answer is N.".

Every step is a single binary operation on numbers that appear in the question (or are results of
earlier steps), so the tests can recompute every answer from the text alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from sdft.data.example import Example


@dataclass(frozen=True)
class Person:
    name: str
    he: str  # subject pronoun
    his: str  # possessive

    @property
    def He(self) -> str:  # noqa: N802 - sentence-initial form
        return self.he.capitalize()


_PEOPLE = [
    Person(n, "she", "her") for n in ("Mia", "Ava", "Zoe", "Priya", "Hana", "Elena", "Grace", "Aisha", "Chloe", "Sofia")
] + [
    Person(n, "he", "his") for n in ("Liam", "Noah", "Omar", "Diego", "Kofi", "Tariq", "Mateo", "Ben", "Ravi", "Jamal")
]

Steps = list[tuple[str, int]]  # (sentence, value) per step; the last value is the answer
Template = Callable[[random.Random], tuple[str, Steps]]


def _people(rng: random.Random, k: int) -> list[Person]:
    return rng.sample(_PEOPLE, k)


def _shopping(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    items = rng.sample(["notebooks", "pencils", "apples", "comic books", "candles", "T-shirts", "mugs", "plants"], 2)
    a, price = rng.randint(2, 9), rng.randint(2, 15)
    total = a * price
    steps = [(f"{p.name} spends {a} x {price} = ${total} on {items[0]}.", total)]
    kind = rng.randint(1, 3)
    if kind == 1:
        q = f"{p.name} buys {a} {items[0]} that cost ${price} each. How much money does {p.he} spend?"
    elif kind == 2:
        bill = next(b for b in (20, 50, 100, 200) if b > total)
        q = (f"{p.name} buys {a} {items[0]} for ${price} each and pays with a ${bill} bill. "
             f"How much change does {p.he} get?")
        steps.append((f"{p.He} gets {bill} - {total} = ${bill - total} in change.", bill - total))
    else:
        b, price2 = rng.randint(2, 9), rng.randint(2, 15)
        q = (f"{p.name} buys {a} {items[0]} at ${price} each and {b} {items[1]} at ${price2} each. "
             f"How much money does {p.he} spend in total?")
        steps.append((f"{p.He} spends {b} x {price2} = ${b * price2} on {items[1]}.", b * price2))
        steps.append((f"In total {p.he} spends {total} + {b * price2} = ${total + b * price2}.", total + b * price2))
    return q, steps


def _sharing(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    things = rng.choice(["marbles", "cookies", "stickers", "crayons", "cards", "seashells"])
    k, each = rng.randint(2, 8), rng.randint(3, 12)
    total = k * each
    kind = rng.randint(1, 3)
    steps: Steps = []
    if kind == 3:
        extra = rng.randint(1, total - 1)
        start = total - extra
        q = (f"{p.name} has {start} {things} and buys {extra} more. "
             f"{p.He} then shares all of them equally among {k} friends.")
        steps.append((f"{p.name} has {start} + {extra} = {total} {things}.", total))
    else:
        q = f"{p.name} has {total} {things} and shares them equally among {k} friends."
    steps.append((f"Each friend gets {total} / {k} = {each} {things}.", each))
    if kind == 1:
        q += f" How many {things} does each friend get?"
    else:
        gone = rng.randint(1, each - 1)
        q += f" Each friend then gives {gone} of them to a sibling. How many {things} does each friend have left?"
        steps.append((f"Each friend has {each} - {gone} = {each - gone} {things} left.", each - gone))
    return q, steps


def _travel(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    verb, lo, hi = rng.choice([("drives", 30, 70), ("cycles", 8, 20), ("walks", 2, 5), ("rides a train", 50, 90)])
    speed, hours = rng.randint(lo, hi), rng.randint(2, 6)
    dist = speed * hours
    kind = rng.randint(1, 4)
    if kind == 1:
        q = f"{p.name} {verb} at {speed} miles per hour for {hours} hours. How many miles does {p.he} travel?"
        return q, [(f"{p.He} travels {speed} x {hours} = {dist} miles.", dist)]
    if kind == 2:
        q = f"{p.name} {verb} {dist} miles at {speed} miles per hour. How many hours does the trip take?"
        return q, [(f"The trip takes {dist} / {speed} = {hours} hours.", hours)]
    if kind == 3:
        trip = dist + rng.randint(5, 60)
        q = (f"{p.name}'s trip is {trip} miles long. {p.He} {verb} at {speed} miles per hour for {hours} hours. "
             f"How many miles are left?")
        return q, [
            (f"{p.He} travels {speed} x {hours} = {dist} miles.", dist),
            (f"There are {trip} - {dist} = {trip - dist} miles left.", trip - dist),
        ]
    speed2, hours2 = rng.randint(lo, hi), rng.randint(1, 4)
    dist2 = speed2 * hours2
    q = (f"{p.name} {verb} at {speed} miles per hour for {hours} hours, then at {speed2} miles per hour "
         f"for {hours2} more hours. How many miles does {p.he} travel in total?")
    return q, [
        (f"First {p.he} travels {speed} x {hours} = {dist} miles.", dist),
        (f"Then {p.he} travels {speed2} x {hours2} = {dist2} miles.", dist2),
        (f"In total {p.he} travels {dist} + {dist2} = {dist + dist2} miles.", dist + dist2),
    ]


def _ages(rng: random.Random) -> tuple[str, Steps]:
    a, b, c = _people(rng, 3)
    older, b_age, years = rng.randint(2, 15), rng.randint(4, 30), rng.randint(2, 10)
    a_age = b_age + older
    first = f"{a.name} is {older} years older than {b.name}, who is {b_age}."
    step1 = (f"{a.name} is {b_age} + {older} = {a_age} years old.", a_age)
    kind = rng.randint(1, 3)
    if kind == 1:
        return f"{first} How old is {a.name}?", [step1]
    if kind == 2:
        q = f"{first} How old will {a.name} be in {years} years?"
        return q, [step1, (f"In {years} years {a.name} will be {a_age} + {years} = {a_age + years}.", a_age + years)]
    q = f"{first} {c.name} is twice as old as {a.name}. How old will {c.name} be in {years} years?"
    return q, [
        step1,
        (f"{c.name} is {a_age} x 2 = {a_age * 2} years old.", a_age * 2),
        (f"In {years} years {c.name} will be {a_age * 2} + {years} = {a_age * 2 + years}.", a_age * 2 + years),
    ]


def _saving(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    thing = rng.choice(["bike", "video game", "guitar", "pair of shoes", "telescope", "backpack"])
    per_week, weeks = rng.randint(3, 25), rng.randint(3, 12)
    saved = per_week * weeks
    step1 = (f"{p.name} saves {per_week} x {weeks} = ${saved}.", saved)
    kind = rng.randint(1, 3)
    if kind == 1:
        return f"{p.name} saves ${per_week} every week. How much money does {p.he} save in {weeks} weeks?", [step1]
    if kind == 2:
        cost = rng.randint(1, saved - 1)
        q = (f"{p.name} saves ${per_week} every week. After {weeks} weeks {p.he} buys a {thing} for ${cost}. "
             f"How much money does {p.he} have left?")
        return q, [step1, (f"{p.He} has {saved} - {cost} = ${saved - cost} left.", saved - cost)]
    start = rng.randint(5, 60)
    cost = rng.randint(1, saved + start - 1)
    q = (f"{p.name} has ${start} in {p.his} piggy bank and saves ${per_week} every week. After {weeks} weeks "
         f"{p.he} buys a {thing} for ${cost}. How much money does {p.he} have left?")
    return q, [
        step1,
        (f"{p.He} then has {start} + {saved} = ${start + saved}.", start + saved),
        (f"After buying the {thing} {p.he} has {start + saved} - {cost} = ${start + saved - cost} left.",
         start + saved - cost),
    ]


def _bakery(rng: random.Random) -> tuple[str, Steps]:
    goods = rng.choice(["muffins", "cookies", "bagels", "cupcakes", "rolls"])
    trays, per_tray = rng.randint(2, 9), rng.randint(4, 12)
    total = trays * per_tray
    step1 = (f"The bakery bakes {trays} x {per_tray} = {total} {goods}.", total)
    kind = rng.randint(1, 3)
    head = f"A bakery bakes {trays} trays with {per_tray} {goods} on each tray."
    if kind == 1:
        return f"{head} How many {goods} does it bake?", [step1]
    box = rng.choice([d for d in range(2, 13) if total % d == 0 and d < total])
    boxes = total // box
    step2 = (f"It fills {total} / {box} = {boxes} boxes.", boxes)
    if kind == 2:
        return f"{head} It packs them in boxes of {box}. How many boxes does it fill?", [step1, step2]
    price = rng.randint(3, 15)
    q = f"{head} It packs them in boxes of {box} and sells each box for ${price}. How much money does it make?"
    return q, [step1, step2, (f"It makes {boxes} x {price} = ${boxes * price}.", boxes * price)]


def _reading(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    per_day, days = rng.randint(5, 40), rng.randint(2, 9)
    read = per_day * days
    kind = rng.randint(1, 3)
    if kind == 1:
        q = f"{p.name} reads {per_day} pages a day. How many pages does {p.he} read in {days} days?"
        return q, [(f"{p.He} reads {per_day} x {days} = {read} pages.", read)]
    if kind == 2:
        book = read + rng.randint(10, 200)
        q = (f"{p.name}'s book has {book} pages. {p.He} reads {per_day} pages a day for {days} days. "
             f"How many pages are left?")
        return q, [
            (f"{p.He} reads {per_day} x {days} = {read} pages.", read),
            (f"There are {book} - {read} = {book - read} pages left.", book - read),
        ]
    weekend = rng.randint(10, 60)
    q = (f"{p.name} reads {per_day} pages on each of the 5 weekdays and {weekend} pages on each of the 2 weekend days. "
         f"How many pages does {p.he} read in a week?")
    return q, [
        (f"On weekdays {p.he} reads {per_day} x 5 = {per_day * 5} pages.", per_day * 5),
        (f"On the weekend {p.he} reads {weekend} x 2 = {weekend * 2} pages.", weekend * 2),
        (f"In a week {p.he} reads {per_day * 5} + {weekend * 2} = {per_day * 5 + weekend * 2} pages.",
         per_day * 5 + weekend * 2),
    ]


def _garden(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    plants = rng.choice(["tomato plants", "sunflowers", "carrots", "tulips", "pepper plants", "lettuce heads"])
    rows, per_row = rng.randint(2, 10), rng.randint(3, 15)
    total = rows * per_row
    step1 = (f"{p.name} plants {rows} x {per_row} = {total} {plants}.", total)
    kind = rng.randint(1, 3)
    head = f"{p.name} plants {rows} rows of {plants} with {per_row} in each row."
    if kind == 1:
        return f"{head} How many {plants} does {p.he} plant?", [step1]
    eaten = rng.randint(1, total - 1)
    step2 = (f"After the rabbits, {total} - {eaten} = {total - eaten} are left.", total - eaten)
    if kind == 2:
        return f"{head} Rabbits eat {eaten} of them. How many {plants} are left?", [step1, step2]
    more = rng.randint(2, 20)
    q = f"{head} Rabbits eat {eaten} of them, so {p.he} plants {more} more. How many {plants} are there now?"
    return q, [step1, step2, (f"Now there are {total - eaten} + {more} = {total - eaten + more} {plants}.",
                              total - eaten + more)]


def _wages(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    job = rng.choice(["babysitting", "tutoring", "walking dogs", "at a cafe", "mowing lawns"])
    rate, hours = rng.randint(8, 25), rng.randint(2, 8)
    day = rate * hours
    kind = rng.randint(1, 3)
    if kind == 1:
        q = f"{p.name} earns ${rate} an hour {job}. How much does {p.he} earn for {hours} hours of work?"
        return q, [(f"{p.He} earns {rate} x {hours} = ${day}.", day)]
    days = rng.randint(2, 6)
    q = f"{p.name} earns ${rate} an hour {job} and works {hours} hours a day for {days} days."
    steps = [
        (f"Each day {p.he} earns {rate} x {hours} = ${day}.", day),
        (f"In {days} days {p.he} earns {day} x {days} = ${day * days}.", day * days),
    ]
    if kind == 2:
        return q + f" How much does {p.he} earn?", steps
    bonus = rng.randint(5, 50)
    q += f" {p.He} also gets a ${bonus} bonus. How much does {p.he} earn in total?"
    return q, steps + [(f"With the bonus {p.he} earns {day * days} + {bonus} = ${day * days + bonus}.",
                        day * days + bonus)]


_FRACTIONS = {2: "Half", 3: "One third", 4: "One quarter", 5: "One fifth"}


def _class_fraction(rng: random.Random) -> tuple[str, Steps]:
    d = rng.choice(sorted(_FRACTIONS))
    sport, other = rng.sample(["soccer", "basketball", "chess", "tennis", "volleyball", "the violin"], 2)
    part = rng.randint(3, 10)
    n = d * part
    kind = rng.randint(1, 3)
    head = f"A class has {n} students. {_FRACTIONS[d]} of them play {sport}"
    step1 = (f"{n} / {d} = {part} students play {sport}.", part)
    if kind == 1:
        return f"{head}. How many students play {sport}?", [step1]
    rest = n - part
    step2 = (f"{n} - {part} = {rest} students play {other}.", rest)
    if kind == 2:
        return f"{head} and the rest play {other}. How many students play {other}?", [step1, step2]
    each = rng.randint(2, 6)
    q = (f"{head} and the rest play {other}. Each student who plays {other} buys {each} tickets for a match. "
         f"How many tickets do they buy?")
    return q, [step1, step2, (f"They buy {rest} x {each} = {rest * each} tickets.", rest * each)]


def _collecting(rng: random.Random) -> tuple[str, Steps]:
    p, friend = _people(rng, 2)
    things = rng.choice(["stamps", "stickers", "baseball cards", "coins", "postcards", "shells"])
    have, gift = rng.randint(10, 80), rng.randint(3, 40)
    step1 = (f"{p.name} has {have} + {gift} = {have + gift} {things}.", have + gift)
    kind = rng.randint(1, 3)
    head = f"{p.name} has {have} {things}. {p.his.capitalize()} aunt gives {p.name} {gift} more."
    if kind == 1:
        return f"{head} How many {things} does {p.name} have now?", [step1]
    if kind == 2:
        give = rng.randint(1, have + gift - 1)
        q = f"{head} Then {p.he} gives {give} to {friend.name}. How many {things} does {p.name} have left?"
        return q, [step1, (f"After giving some away {p.he} has {have + gift} - {give} = {have + gift - give}.",
                           have + gift - give)]
    packs, per_pack = rng.randint(2, 6), rng.randint(3, 12)
    q = (f"{head} Then {p.he} buys {packs} packs with {per_pack} {things} in each. "
         f"How many {things} does {p.he} have now?")
    return q, [
        step1,
        (f"The packs hold {packs} x {per_pack} = {packs * per_pack} {things}.", packs * per_pack),
        (f"{p.He} now has {have + gift} + {packs * per_pack} = {have + gift + packs * per_pack} {things}.",
         have + gift + packs * per_pack),
    ]


def _chores(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    chore = rng.choice(["chores", "practice pieces", "homework subjects", "garden beds", "puzzles"])
    k = rng.choice([2, 3, 4, 5, 6])
    hours = rng.randint(1, 4)
    minutes = 60 * hours // k  # k divides 60, so this is exact
    total = k * minutes
    step1 = (f"{p.He} spends {k} x {minutes} = {total} minutes.", total)
    kind = rng.randint(1, 3)
    head = f"{p.name} spends {minutes} minutes on each of {k} {chore}"
    if kind == 1:
        return f"{head}. How many minutes does {p.he} spend in total?", [step1]
    step2 = (f"That is {total} / 60 = {hours} hours.", hours)
    if kind == 2:
        return f"{head}. How many hours does {p.he} spend?", [step1, step2]
    days = rng.randint(2, 7)
    q = f"{head} every day. How many hours does {p.he} spend on them in {days} days?"
    return q, [step1, step2, (f"In {days} days {p.he} spends {hours} x {days} = {hours * days} hours.", hours * days)]


TEMPLATES: tuple[Template, ...] = (
    _shopping, _sharing, _travel, _ages, _saving, _bakery,
    _reading, _garden, _wages, _class_fraction, _collecting, _chores,
)


def format_answer(steps: Steps) -> str:
    """GSM8K-style reference: one line per step, then 'The answer is N.'."""
    return "\n".join(s for s, _ in steps) + f"\nThe answer is {steps[-1][1]}."


def generate_arithmetic(n: int = 200, seed: int = 0) -> list[Example]:
    """`n` word problems with worked answers; the same seed always gives the same list."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    examples: list[Example] = []
    seen: set[str] = set()
    tries = 0
    while len(examples) < n:
        question, steps = rng.choice(TEMPLATES)(rng)
        tries += 1
        # Skip repeats so a small set is not padded with copies (bounded, so huge n still ends).
        if question in seen and tries < 20 * n:
            continue
        seen.add(question)
        i = len(examples) + 1
        examples.append(Example(id=str(i), instruction=question, response=format_answer(steps), row=i))
    return examples
