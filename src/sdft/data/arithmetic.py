"""A built-in, offline task: GSM8K-style arithmetic word problems with worked answers.

Used by the demo and tests (`builtin:arithmetic`), so it must be deterministic for a seed and need
nothing downloaded. Each problem takes 1 to 3 steps; the reference answer is written like GSM8K's:
one sentence per step showing its arithmetic ("a x b = c"), then "The answer is N.". The wording varies
as real answers' does (several phrasings per step, independent steps in either order, an occasional
opening sentence or connective, "$5" or "5 dollars"): with one fixed phrasing the seed model found the
demo's references easier to predict than GSM8K's, so the demo would understate the distribution gap.

Every step is a single binary operation on numbers that appear in the question (or are results of
earlier steps), so the tests can recompute every answer from the text alone.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from sdft.data.example import Example
from sdft.core.errors import InputError


@dataclass(frozen=True)
class Person:
    name: str
    he: str  # subject pronoun
    his: str  # possessive

    @property
    def He(self) -> str:  # noqa: N802 - sentence-initial form
        return self.he.capitalize()

    @property
    def His(self) -> str:  # noqa: N802 - sentence-initial form
        return self.his.capitalize()

    @property
    def him(self) -> str:  # object pronoun
        return "her" if self.he == "she" else "him"


_PEOPLE = [
    Person(n, "she", "her") for n in ("Mia", "Ava", "Zoe", "Priya", "Hana", "Elena", "Grace", "Aisha", "Chloe", "Sofia")
] + [
    Person(n, "he", "his") for n in ("Liam", "Noah", "Omar", "Diego", "Kofi", "Tariq", "Mateo", "Ben", "Ravi", "Jamal")
]

@dataclass(frozen=True)
class Step:
    """One step of the worked answer: several ways to say it, each showing its arithmetic as "a op b = c"."""

    forms: tuple[str, ...]
    value: int
    free: bool = False  # independent of the neighbouring free steps, so they may be said in either order


Steps = list[Step]  # the last step's value is the answer
Template = Callable[[random.Random], tuple[str, Steps]]


def _step(value: int, *forms: str, free: bool = False) -> Step:
    return Step(tuple(forms), value, free)


def _people(rng: random.Random, k: int) -> list[Person]:
    return rng.sample(_PEOPLE, k)


# The templates draw only the problem from their rng; how the answer is worded is chosen later from a
# separate rng (see format_answer), so a seed gives the same questions whatever the wording.

def _shopping(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    items = rng.sample(["notebooks", "pencils", "apples", "comic books", "candles", "T-shirts", "mugs", "plants"], 2)
    a, price = rng.randint(2, 9), rng.randint(2, 15)
    total = a * price
    kind = rng.randint(1, 3)
    first = _step(total, f"{p.name} spends {a} x {price} = ${total} on {items[0]}.",
                  f"The {items[0]} cost {a} x {price} = ${total}.",
                  f"{a} {items[0]} at ${price} each cost {a} x {price} = ${total}.",
                  f"{p.name} pays ${total} for the {items[0]} because {a} x {price} = {total}.", free=kind == 3)
    steps = [first]
    if kind == 1:
        q = f"{p.name} buys {a} {items[0]} that cost ${price} each. How much money does {p.he} spend?"
    elif kind == 2:
        bill = next(b for b in (20, 50, 100, 200) if b > total)
        q = (f"{p.name} buys {a} {items[0]} for ${price} each and pays with a ${bill} bill. "
             f"How much change does {p.he} get?")
        steps.append(_step(bill - total, f"{p.He} gets {bill} - {total} = ${bill - total} in change.",
                           f"The change is {bill} - {total} = ${bill - total}.",
                           f"{p.name} gets back {bill} - {total} = ${bill - total}."))
    else:
        b, price2 = rng.randint(2, 9), rng.randint(2, 15)
        other, both = b * price2, total + b * price2
        q = (f"{p.name} buys {a} {items[0]} at ${price} each and {b} {items[1]} at ${price2} each. "
             f"How much money does {p.he} spend in total?")
        steps.append(_step(other, f"{p.He} spends {b} x {price2} = ${other} on {items[1]}.",
                           f"The {items[1]} cost {b} x {price2} = ${other}.",
                           f"{b} {items[1]} at ${price2} each cost {b} x {price2} = ${other}.", free=True))
        steps.append(_step(both, f"In total {p.he} spends {total} + {other} = ${both}.",
                           f"{p.name} spends {total} + {other} = ${both} altogether.",
                           f"The total is {total} + {other} = ${both}."))
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
        steps.append(_step(total, f"{p.name} has {start} + {extra} = {total} {things}.",
                           f"After buying more, {p.he} has {start} + {extra} = {total} {things}.",
                           f"{p.name} shares {start} + {extra} = {total} {things} in all."))
    else:
        q = f"{p.name} has {total} {things} and shares them equally among {k} friends."
    steps.append(_step(each, f"Each friend gets {total} / {k} = {each} {things}.",
                       f"Each of the {k} friends gets {total} / {k} = {each}.",
                       f"Every friend receives {total} / {k} = {each} {things}."))
    if kind == 1:
        q += f" How many {things} does each friend get?"
    else:
        gone = rng.randint(1, each - 1)
        q += f" Each friend then gives {gone} of them to a sibling. How many {things} does each friend have left?"
        steps.append(_step(each - gone, f"Each friend has {each} - {gone} = {each - gone} {things} left.",
                           f"After giving {gone} away, each friend keeps {each} - {gone} = {each - gone}.",
                           f"Each friend is left with {each} - {gone} = {each - gone} {things}."))
    return q, steps


def _travel(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    verb, lo, hi = rng.choice([("drives", 30, 70), ("cycles", 8, 20), ("walks", 2, 5), ("rides a train", 50, 90)])
    speed, hours = rng.randint(lo, hi), rng.randint(2, 6)
    dist = speed * hours
    kind = rng.randint(1, 4)
    travels = _step(dist, f"{p.He} travels {speed} x {hours} = {dist} miles.",
                    f"In {hours} hours {p.he} covers {speed} x {hours} = {dist} miles.",
                    f"Distance is speed times time, so {p.he} goes {speed} x {hours} = {dist} miles.",
                    f"{p.name} travels {dist} miles because {speed} x {hours} = {dist}.")
    if kind == 1:
        q = f"{p.name} {verb} at {speed} miles per hour for {hours} hours. How many miles does {p.he} travel?"
        return q, [travels]
    if kind == 2:
        q = f"{p.name} {verb} {dist} miles at {speed} miles per hour. How many hours does the trip take?"
        return q, [_step(hours, f"The trip takes {dist} / {speed} = {hours} hours.",
                         f"Time is distance divided by speed: {dist} / {speed} = {hours} hours.",
                         f"{p.name} needs {dist} / {speed} = {hours} hours.")]
    if kind == 3:
        trip = dist + rng.randint(5, 60)
        q = (f"{p.name}'s trip is {trip} miles long. {p.He} {verb} at {speed} miles per hour for {hours} hours. "
             f"How many miles are left?")
        return q, [travels, _step(trip - dist, f"There are {trip} - {dist} = {trip - dist} miles left.",
                                  f"{p.He} still has {trip} - {dist} = {trip - dist} miles to go.",
                                  f"The distance left is {trip} - {dist} = {trip - dist} miles.")]
    speed2, hours2 = rng.randint(lo, hi), rng.randint(1, 4)
    dist2 = speed2 * hours2
    q = (f"{p.name} {verb} at {speed} miles per hour for {hours} hours, then at {speed2} miles per hour "
         f"for {hours2} more hours. How many miles does {p.he} travel in total?")
    return q, [
        _step(dist, f"At {speed} miles per hour {p.he} travels {speed} x {hours} = {dist} miles.",
              f"The first part is {speed} x {hours} = {dist} miles.",
              f"For {hours} hours {p.he} covers {speed} x {hours} = {dist} miles.", free=True),
        _step(dist2, f"At {speed2} miles per hour {p.he} travels {speed2} x {hours2} = {dist2} miles.",
              f"The second part is {speed2} x {hours2} = {dist2} miles.",
              f"For the other {hours2} hours {p.he} covers {speed2} x {hours2} = {dist2} miles.", free=True),
        _step(dist + dist2, f"In total {p.he} travels {dist} + {dist2} = {dist + dist2} miles.",
              f"Altogether that is {dist} + {dist2} = {dist + dist2} miles.",
              f"The whole trip is {dist} + {dist2} = {dist + dist2} miles."),
    ]


def _ages(rng: random.Random) -> tuple[str, Steps]:
    a, b, c = _people(rng, 3)
    older, b_age, years = rng.randint(2, 15), rng.randint(4, 30), rng.randint(2, 10)
    a_age = b_age + older
    first = f"{a.name} is {older} years older than {b.name}, who is {b_age}."
    step1 = _step(a_age, f"{a.name} is {b_age} + {older} = {a_age} years old.",
                  f"{a.name}'s age is {b_age} + {older} = {a_age}.",
                  f"Since {b.name} is {b_age}, {a.name} is {b_age} + {older} = {a_age}.")
    kind = rng.randint(1, 3)
    if kind == 1:
        return f"{first} How old is {a.name}?", [step1]
    if kind == 2:
        q = f"{first} How old will {a.name} be in {years} years?"
        return q, [step1, _step(a_age + years,
                                f"In {years} years {a.name} will be {a_age} + {years} = {a_age + years}.",
                                f"{years} years from now {a.he} will be {a_age} + {years} = {a_age + years} years old.",
                                f"{a.name} will then be {a_age} + {years} = {a_age + years}.")]
    q = f"{first} {c.name} is twice as old as {a.name}. How old will {c.name} be in {years} years?"
    return q, [
        step1,
        _step(a_age * 2, f"{c.name} is {a_age} x 2 = {a_age * 2} years old.",
              f"Twice {a.name}'s age is {a_age} x 2 = {a_age * 2}, so that is {c.name}'s age.",
              f"{c.name}'s age is {a_age} x 2 = {a_age * 2}."),
        _step(a_age * 2 + years, f"In {years} years {c.name} will be {a_age * 2} + {years} = {a_age * 2 + years}.",
              f"{years} years from now {c.he} will be {a_age * 2} + {years} = {a_age * 2 + years} years old.",
              f"{c.name} will then be {a_age * 2} + {years} = {a_age * 2 + years}."),
    ]


def _saving(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    thing = rng.choice(["bike", "video game", "guitar", "pair of shoes", "telescope", "backpack"])
    per_week, weeks = rng.randint(3, 25), rng.randint(3, 12)
    saved = per_week * weeks
    step1 = _step(saved, f"{p.name} saves {per_week} x {weeks} = ${saved}.",
                  f"In {weeks} weeks {p.he} saves {per_week} x {weeks} = ${saved}.",
                  f"{p.His} savings come to {per_week} x {weeks} = ${saved}.",
                  f"{p.name} puts away ${saved} because {per_week} x {weeks} = {saved}.")
    kind = rng.randint(1, 3)
    if kind == 1:
        return f"{p.name} saves ${per_week} every week. How much money does {p.he} save in {weeks} weeks?", [step1]
    if kind == 2:
        cost = rng.randint(1, saved - 1)
        q = (f"{p.name} saves ${per_week} every week. After {weeks} weeks {p.he} buys a {thing} for ${cost}. "
             f"How much money does {p.he} have left?")
        return q, [step1, _step(saved - cost, f"{p.He} has {saved} - {cost} = ${saved - cost} left.",
                                f"After buying the {thing}, {p.name} has {saved} - {cost} = ${saved - cost}.",
                                f"What is left is {saved} - {cost} = ${saved - cost}.")]
    start = rng.randint(5, 60)
    cost = rng.randint(1, saved + start - 1)
    q = (f"{p.name} has ${start} in {p.his} piggy bank and saves ${per_week} every week. After {weeks} weeks "
         f"{p.he} buys a {thing} for ${cost}. How much money does {p.he} have left?")
    return q, [
        step1,
        _step(start + saved, f"{p.He} then has {start} + {saved} = ${start + saved}.",
              f"With the piggy bank {p.he} has {start} + {saved} = ${start + saved}.",
              f"Together with the ${start} {p.he} started with, that is {start} + {saved} = ${start + saved}."),
        _step(start + saved - cost,
              f"After buying the {thing} {p.he} has {start + saved} - {cost} = ${start + saved - cost} left.",
              f"The {thing} leaves {p.him} with {start + saved} - {cost} = ${start + saved - cost}.",
              f"{p.name} has {start + saved} - {cost} = ${start + saved - cost} left."),
    ]


def _bakery(rng: random.Random) -> tuple[str, Steps]:
    goods = rng.choice(["muffins", "cookies", "bagels", "cupcakes", "rolls"])
    trays, per_tray = rng.randint(2, 9), rng.randint(4, 12)
    total = trays * per_tray
    step1 = _step(total, f"The bakery bakes {trays} x {per_tray} = {total} {goods}.",
                  f"There are {trays} x {per_tray} = {total} {goods} on the trays.",
                  f"{trays} trays of {per_tray} make {trays} x {per_tray} = {total} {goods}.")
    kind = rng.randint(1, 3)
    head = f"A bakery bakes {trays} trays with {per_tray} {goods} on each tray."
    if kind == 1:
        return f"{head} How many {goods} does it bake?", [step1]
    box = rng.choice([d for d in range(2, 13) if total % d == 0 and d < total])
    boxes = total // box
    step2 = _step(boxes, f"It fills {total} / {box} = {boxes} boxes.",
                  f"That is {total} / {box} = {boxes} boxes of {box}.",
                  f"The {goods} fill {total} / {box} = {boxes} boxes.")
    if kind == 2:
        return f"{head} It packs them in boxes of {box}. How many boxes does it fill?", [step1, step2]
    price = rng.randint(3, 15)
    q = f"{head} It packs them in boxes of {box} and sells each box for ${price}. How much money does it make?"
    return q, [step1, step2, _step(boxes * price, f"It makes {boxes} x {price} = ${boxes * price}.",
                                   f"Selling them brings in {boxes} x {price} = ${boxes * price}.",
                                   f"The boxes sell for {boxes} x {price} = ${boxes * price} in total.")]


def _reading(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    per_day, days = rng.randint(5, 40), rng.randint(2, 9)
    read = per_day * days
    kind = rng.randint(1, 3)
    reads = _step(read, f"{p.He} reads {per_day} x {days} = {read} pages.",
                  f"In {days} days {p.he} reads {per_day} x {days} = {read} pages.",
                  f"{p.name} gets through {per_day} x {days} = {read} pages.",
                  f"{p.He} reads {read} pages because {per_day} x {days} = {read}.")
    if kind == 1:
        q = f"{p.name} reads {per_day} pages a day. How many pages does {p.he} read in {days} days?"
        return q, [reads]
    if kind == 2:
        book = read + rng.randint(10, 200)
        q = (f"{p.name}'s book has {book} pages. {p.He} reads {per_day} pages a day for {days} days. "
             f"How many pages are left?")
        return q, [reads, _step(book - read, f"There are {book} - {read} = {book - read} pages left.",
                                f"{p.He} still has {book} - {read} = {book - read} pages to read.",
                                f"The pages left are {book} - {read} = {book - read}.")]
    weekend = rng.randint(10, 60)
    q = (f"{p.name} reads {per_day} pages on each of the 5 weekdays and {weekend} pages on each of the 2 weekend days. "
         f"How many pages does {p.he} read in a week?")
    week = per_day * 5 + weekend * 2
    return q, [
        _step(per_day * 5, f"On weekdays {p.he} reads {per_day} x 5 = {per_day * 5} pages.",
              f"The weekdays give {per_day} x 5 = {per_day * 5} pages.", free=True),
        _step(weekend * 2, f"On the weekend {p.he} reads {weekend} x 2 = {weekend * 2} pages.",
              f"The weekend gives {weekend} x 2 = {weekend * 2} pages.", free=True),
        _step(week, f"In a week {p.he} reads {per_day * 5} + {weekend * 2} = {week} pages.",
              f"Altogether that is {per_day * 5} + {weekend * 2} = {week} pages a week.",
              f"{p.name} reads {per_day * 5} + {weekend * 2} = {week} pages in a week."),
    ]


def _garden(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    plants = rng.choice(["tomato plants", "sunflowers", "carrots", "tulips", "pepper plants", "lettuce heads"])
    rows, per_row = rng.randint(2, 10), rng.randint(3, 15)
    total = rows * per_row
    step1 = _step(total, f"{p.name} plants {rows} x {per_row} = {total} {plants}.",
                  f"There are {rows} x {per_row} = {total} {plants} in the rows.",
                  f"{rows} rows of {per_row} make {rows} x {per_row} = {total} {plants}.")
    kind = rng.randint(1, 3)
    head = f"{p.name} plants {rows} rows of {plants} with {per_row} in each row."
    if kind == 1:
        return f"{head} How many {plants} does {p.he} plant?", [step1]
    eaten = rng.randint(1, total - 1)
    step2 = _step(total - eaten, f"After the rabbits, {total} - {eaten} = {total - eaten} are left.",
                  f"The rabbits leave {total} - {eaten} = {total - eaten} {plants}.",
                  f"There are {total} - {eaten} = {total - eaten} {plants} left.")
    if kind == 2:
        return f"{head} Rabbits eat {eaten} of them. How many {plants} are left?", [step1, step2]
    more = rng.randint(2, 20)
    q = f"{head} Rabbits eat {eaten} of them, so {p.he} plants {more} more. How many {plants} are there now?"
    return q, [step1, step2, _step(total - eaten + more,
                                   f"Now there are {total - eaten} + {more} = {total - eaten + more} {plants}.",
                                   f"With the new ones there are {total - eaten} + {more} = {total - eaten + more}.",
                                   f"{p.name} ends up with {total - eaten} + {more} = "
                                   f"{total - eaten + more} {plants}.")]


def _wages(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    job = rng.choice(["babysitting", "tutoring", "walking dogs", "at a cafe", "mowing lawns"])
    rate, hours = rng.randint(8, 25), rng.randint(2, 8)
    day = rate * hours
    kind = rng.randint(1, 3)
    if kind == 1:
        q = f"{p.name} earns ${rate} an hour {job}. How much does {p.he} earn for {hours} hours of work?"
        return q, [_step(day, f"{p.He} earns {rate} x {hours} = ${day}.",
                         f"For {hours} hours {p.he} makes {rate} x {hours} = ${day}.",
                         f"{p.name}'s pay is {rate} x {hours} = ${day}.")]
    days = rng.randint(2, 6)
    q = f"{p.name} earns ${rate} an hour {job} and works {hours} hours a day for {days} days."
    steps = [
        _step(day, f"Each day {p.he} earns {rate} x {hours} = ${day}.",
              f"A day's work pays {rate} x {hours} = ${day}.",
              f"{p.name} makes {rate} x {hours} = ${day} per day."),
        _step(day * days, f"In {days} days {p.he} earns {day} x {days} = ${day * days}.",
              f"Over {days} days that is {day} x {days} = ${day * days}.",
              f"{p.He} earns {day} x {days} = ${day * days} for the {days} days."),
    ]
    if kind == 2:
        return q + f" How much does {p.he} earn?", steps
    bonus = rng.randint(5, 50)
    q += f" {p.He} also gets a ${bonus} bonus. How much does {p.he} earn in total?"
    return q, steps + [_step(day * days + bonus,
                             f"With the bonus {p.he} earns {day * days} + {bonus} = ${day * days + bonus}.",
                             f"Adding the bonus gives {day * days} + {bonus} = ${day * days + bonus}.",
                             f"{p.name} earns {day * days} + {bonus} = ${day * days + bonus} in total.")]


_FRACTIONS = {2: "Half", 3: "One third", 4: "One quarter", 5: "One fifth"}


def _class_fraction(rng: random.Random) -> tuple[str, Steps]:
    d = rng.choice(sorted(_FRACTIONS))
    sport, other = rng.sample(["soccer", "basketball", "chess", "tennis", "volleyball", "the violin"], 2)
    part = rng.randint(3, 10)
    n = d * part
    kind = rng.randint(1, 3)
    head = f"A class has {n} students. {_FRACTIONS[d]} of them play {sport}"
    step1 = _step(part, f"{n} / {d} = {part} students play {sport}.",
                  f"The number who play {sport} is {n} / {d} = {part}.",
                  f"{_FRACTIONS[d]} of {n} is {n} / {d} = {part} students.")
    if kind == 1:
        return f"{head}. How many students play {sport}?", [step1]
    rest = n - part
    step2 = _step(rest, f"{n} - {part} = {rest} students play {other}.",
                  f"The rest is {n} - {part} = {rest} students.",
                  f"That leaves {n} - {part} = {rest} students who play {other}.")
    if kind == 2:
        return f"{head} and the rest play {other}. How many students play {other}?", [step1, step2]
    each = rng.randint(2, 6)
    q = (f"{head} and the rest play {other}. Each student who plays {other} buys {each} tickets for a match. "
         f"How many tickets do they buy?")
    return q, [step1, step2, _step(rest * each, f"They buy {rest} x {each} = {rest * each} tickets.",
                                   f"The tickets number {rest} x {each} = {rest * each}.",
                                   f"Together they buy {rest} x {each} = {rest * each} tickets.")]


def _collecting(rng: random.Random) -> tuple[str, Steps]:
    p, friend = _people(rng, 2)
    things = rng.choice(["stamps", "stickers", "baseball cards", "coins", "postcards", "shells"])
    have, gift = rng.randint(10, 80), rng.randint(3, 40)
    step1 = _step(have + gift, f"{p.name} has {have} + {gift} = {have + gift} {things}.",
                  f"With the gift {p.he} has {have} + {gift} = {have + gift}.",
                  f"After {p.his} aunt's gift {p.name} has {have} + {gift} = {have + gift} {things}.")
    kind = rng.randint(1, 3)
    head = f"{p.name} has {have} {things}. {p.His} aunt gives {p.name} {gift} more."
    if kind == 1:
        return f"{head} How many {things} does {p.name} have now?", [step1]
    if kind == 2:
        give = rng.randint(1, have + gift - 1)
        q = f"{head} Then {p.he} gives {give} to {friend.name}. How many {things} does {p.name} have left?"
        left = have + gift - give
        return q, [step1, _step(left, f"After giving some away {p.he} has {have + gift} - {give} = {left}.",
                                f"Giving {give} to {friend.name} leaves {have + gift} - {give} = {left} {things}.",
                                f"{p.name} has {have + gift} - {give} = {left} {things} left.")]
    packs, per_pack = rng.randint(2, 6), rng.randint(3, 12)
    q = (f"{head} Then {p.he} buys {packs} packs with {per_pack} {things} in each. "
         f"How many {things} does {p.he} have now?")
    bought, now = packs * per_pack, have + gift + packs * per_pack
    return q, [
        _step(have + gift, *step1.forms, free=True),
        _step(bought, f"The packs hold {packs} x {per_pack} = {bought} {things}.",
              f"{p.He} buys {packs} x {per_pack} = {bought} {things}.",
              f"{packs} packs of {per_pack} make {packs} x {per_pack} = {bought}.", free=True),
        _step(now, f"{p.He} now has {have + gift} + {bought} = {now} {things}.",
              f"Altogether {p.he} has {have + gift} + {bought} = {now}.",
              f"{p.name} ends up with {have + gift} + {bought} = {now} {things}."),
    ]


def _chores(rng: random.Random) -> tuple[str, Steps]:
    p = _people(rng, 1)[0]
    chore = rng.choice(["chores", "practice pieces", "homework subjects", "garden beds", "puzzles"])
    k = rng.choice([2, 3, 4, 5, 6])
    hours = rng.randint(1, 4)
    minutes = 60 * hours // k  # k divides 60, so this is exact
    total = k * minutes
    step1 = _step(total, f"{p.He} spends {k} x {minutes} = {total} minutes.",
                  f"The {chore} take {k} x {minutes} = {total} minutes.",
                  f"{k} {chore} at {minutes} minutes each take {k} x {minutes} = {total} minutes.")
    kind = rng.randint(1, 3)
    head = f"{p.name} spends {minutes} minutes on each of {k} {chore}"
    if kind == 1:
        return f"{head}. How many minutes does {p.he} spend in total?", [step1]
    step2 = _step(hours, f"That is {total} / 60 = {hours} hours.",
                  f"In hours that is {total} / 60 = {hours}.",
                  f"There are 60 minutes in an hour, so that is {total} / 60 = {hours} hours.")
    if kind == 2:
        return f"{head}. How many hours does {p.he} spend?", [step1, step2]
    days = rng.randint(2, 7)
    q = f"{head} every day. How many hours does {p.he} spend on them in {days} days?"
    return q, [step1, step2, _step(hours * days,
                                   f"In {days} days {p.he} spends {hours} x {days} = {hours * days} hours.",
                                   f"Over {days} days that is {hours} x {days} = {hours * days} hours.",
                                   f"{p.name} spends {hours} x {days} = {hours * days} hours in {days} days.")]


TEMPLATES: tuple[Template, ...] = (
    _shopping, _sharing, _travel, _ages, _saving, _bakery,
    _reading, _garden, _wages, _class_fraction, _collecting, _chores,
)

# How the steps are strung together. Real worked answers (GSM8K's) open a step with "So", "Then",
# "That means" or nothing, sometimes say what they are about to do, and write money as "$5" or "5
# dollars"; always the same phrasing would make the demo's references easier for a model to predict
# than real ones.
_INTROS = ("Let's solve this step by step.", "Let's work it out.", "We can do this in steps.",
           "Let's break the problem down.", "Here is the working.")
# Share of answers (or of steps, for connectives) that take each variation.
P_INTRO, P_CONNECTIVE, P_DOLLARS, P_NO_FULL_STOPS = 0.1, 0.3, 0.2, 0.1
_CONNECTIVES = ("So ", "Then ", "That means ", "This means ", "Next, ", "Now ")
_OPENERS = {"So", "Then", "That", "This", "Next", "Now", "First", "Finally", "Since", "Altogether", "After"}
# Sentence-initial words that stay correct in lower case after a connective (names never do).
_LOWERABLE = {"He", "She", "His", "Her", "It", "They", "The", "There", "Each", "Every", "In", "On", "Over",
              "With", "For", "At", "A", "Adding", "Together", "Giving", "Selling", "Distance", "Time",
              "Twice", "Half", "One", "What"}


def _join(connective: str, sentence: str) -> str:
    if not connective or sentence.split(" ", 1)[0] in _OPENERS:
        return sentence
    word, rest = (sentence.split(" ", 1) + [""])[:2]
    if word in _LOWERABLE:
        return connective + word.lower() + (" " + rest if rest else "")
    return connective + sentence  # a name or a number reads the same after "So "


def _in_order(steps: Steps, style: random.Random) -> Steps:
    """Runs of consecutive free (independent) steps, shuffled."""
    out: Steps = []
    i = 0
    while i < len(steps):
        j = i
        while j < len(steps) and steps[j].free:
            j += 1
        if j > i:
            run = steps[i:j]
            style.shuffle(run)
            out += run
            i = j
        else:
            out.append(steps[i])
            i += 1
    return out


def format_answer(steps: Steps, style: random.Random | None = None) -> str:
    """GSM8K-style reference: one line per step, then 'The answer is N.'.

    Without `style` every step takes its first phrasing in the given order; with it the phrasing, the
    order of independent steps, an opening sentence, connectives, "$N" vs "N dollars" and trailing full
    stops vary. Every line keeps exactly one equation, so the answer can be recomputed from the text.
    """
    if style is None:
        return "\n".join(s.forms[0] for s in steps) + f"\nThe answer is {steps[-1].value}."
    dollars = style.random() < P_DOLLARS
    full_stops = style.random() >= P_NO_FULL_STOPS
    lines = []
    for k, step in enumerate(_in_order(steps, style)):
        text = style.choice(step.forms)
        if k == 0:
            if style.random() < P_INTRO:
                text = f"{style.choice(_INTROS)} {text}"
        else:
            last = k == len(steps) - 1
            roll = style.random()
            if last and len(steps) == 3 and roll < 0.15:
                text = _join("Finally, ", text)
            elif roll < P_CONNECTIVE:
                text = _join(style.choice(_CONNECTIVES), text)
        if dollars:
            text = re.sub(r"\$(\d+)", lambda m: f"{m[1]} dollar{'' if m[1] == '1' else 's'}", text)
        if not full_stops:
            text = text.rstrip(".")
        lines.append(text)
    return "\n".join(lines) + f"\nThe answer is {steps[-1].value}."


def generate_arithmetic(n: int = 200, seed: int = 0) -> list[Example]:
    """`n` word problems with worked answers; the same seed always gives the same list.

    The problems come from one rng and the wording of their answers from another, so a seed's questions
    do not depend on how answers are phrased."""
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    style = random.Random(f"arithmetic-wording-{seed}")
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
        examples.append(Example(id=str(i), instruction=question, response=format_answer(steps, style), row=i))
    return examples
