"""English sentences for the synthetic mini corpus, from a small hand-written grammar and vocabulary.

The sentences are grammatical and varied (about 400 words of everyday English in a dozen clause
patterns), so that phones occur in many contexts and a language-independent probe has real work to do.
"""

from __future__ import annotations

import random
from typing import List

NOUNS = """
man woman child friend teacher doctor farmer sailor driver painter writer singer baker student
captain king queen mother father sister brother neighbour stranger soldier girl boy dog cat horse
bird fish river mountain forest garden window door table chair letter book paper story song city
village road bridge market house kitchen school church station island ocean valley field flower
tree stone fire water bread apple coffee morning evening winter summer storm cloud light shadow
picture music answer question promise message secret journey window basket bottle candle
""".split()

ADJECTIVES = """
old young small large quiet bright dark warm cold happy tired careful patient gentle clever
brave strange simple heavy narrow wide green yellow golden silver empty busy famous honest
lonely proud early late distant ancient modern curious sudden
""".split()

TRANSITIVE = """
found saw opened closed carried painted wrote read sold bought watched followed helped visited
remembered forgot answered repaired cleaned crossed built broke washed found lifted dropped
described noticed brought chose
""".split()

INTRANSITIVE = """
arrived laughed waited smiled slept listened travelled worked danced stayed returned disappeared
shouted whispered rested wandered
""".split()

ADVERBS = """
quickly slowly quietly carefully happily suddenly gently early late again today yesterday
outside together alone
""".split()

PREPOSITIONS = "near behind under above beside across through inside before after toward beyond".split()
DETERMINERS = "the the the a this that every one my our their his her".split()
PRONOUNS = "he she they we you I".split()
NAMES = "anna peter maria john lucy thomas emma george clara henry julia oscar".split()
CONJUNCTIONS = "and but because while when so".split()
TIMES = "in the morning|at night|last winter|every evening|before dawn|after the storm|on sunday".split("|")


def _np(rng: random.Random) -> List[str]:
    det = rng.choice(DETERMINERS)
    noun = rng.choice(NOUNS)
    if det == "a" and noun[0] in "aeiou":
        det = "an"
    if rng.random() < 0.5:
        adj = rng.choice(ADJECTIVES)
        if det in ("a", "an"):
            det = "an" if adj[0] in "aeiou" else "a"
        return [det, adj, noun]
    return [det, noun]


def _subject(rng: random.Random) -> List[str]:
    r = rng.random()
    if r < 0.25:
        return [rng.choice(PRONOUNS)]
    if r < 0.4:
        return [rng.choice(NAMES)]
    return _np(rng)


def _clause(rng: random.Random) -> List[str]:
    words = _subject(rng)
    if rng.random() < 0.6:
        words += [rng.choice(TRANSITIVE)] + _np(rng)
    else:
        words += [rng.choice(INTRANSITIVE)]
    r = rng.random()
    if r < 0.35:
        words += [rng.choice(PREPOSITIONS)] + _np(rng)
    elif r < 0.55:
        words += [rng.choice(ADVERBS)]
    elif r < 0.7:
        words += rng.choice(TIMES).split()
    return words


def sentence(rng: random.Random, min_words: int = 5, max_words: int = 16) -> List[str]:
    """One sentence as a list of lower-case words (``min_words``..``max_words`` long)."""
    for _ in range(100):
        words = _clause(rng)
        if rng.random() < 0.35:
            words += [rng.choice(CONJUNCTIONS)] + _clause(rng)
        if min_words <= len(words) <= max_words:
            return [w.lower() for w in words]
    return [w.lower() for w in words[:max_words]]


def vocabulary() -> List[str]:
    """Every word the grammar can produce."""
    words = set(NOUNS + ADJECTIVES + TRANSITIVE + INTRANSITIVE + ADVERBS + PREPOSITIONS + DETERMINERS)
    words |= {p.lower() for p in PRONOUNS} | set(NAMES) | set(CONJUNCTIONS) | {"an"}
    for t in TIMES:
        words |= set(t.split())
    return sorted(words)
