"""Generated math tasks with exact answers: digit addition (tiny CPU runs) and arithmetic word problems.

Train and test splits are disjoint: a problem belongs to ``test`` when the CRC32 of its text falls in
the first ``test_percent`` of 100 buckets, so a problem's split never depends on the seed or the size.
"""

from __future__ import annotations

import random
import zlib

from vortex_rl.data.loaders import DATASETS
from vortex_rl.data.problem import MathProblem

SPLITS = ("train", "test")

_WORD_TEMPLATES = (
    ("{name} has {a} {item}. {pronoun} buys {b} more. How many {item} does {name} have now?", "+"),
    ("{name} had {a} {item} and gave {b} of them to a friend. How many {item} are left?", "-"),
    ("A box holds {a} {item}. How many {item} are in {b} boxes?", "*"),
    ("{name} picks {a} {item} in the morning and {b} in the afternoon. How many {item} in total?", "+"),
    ("There are {a} {item} on a table. {name} takes away {b}. How many {item} remain?", "-"),
    ("{name} buys {b} bags with {a} {item} in each bag. How many {item} does {name} buy?", "*"),
)
_NAMES = (("Tom", "He"), ("Anna", "She"), ("Ravi", "He"), ("Mei", "She"), ("Omar", "He"), ("Lena", "She"))
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books")


def in_split(text: str, split: str, test_percent: int) -> bool:
    """Whether ``text`` belongs to ``split`` (``"train"`` or ``"test"``) under the CRC32 bucket rule."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} not supported by synthetic datasets; use one of {SPLITS}")
    if not 0 < test_percent < 100:
        raise ValueError(f"test_percent={test_percent} must lie in (0, 100)")
    is_test = zlib.crc32(text.encode()) % 100 < test_percent
    return is_test == (split == "test")


@DATASETS.register("synthetic_addition")
def addition_problems(path: str | None = None, split: str = "train", *, max_operand: int = 19, num: int | None = None,
                      seed: int = 0, test_percent: int = 20) -> list[MathProblem]:
    """``"a+b"`` for all ``0 <= a, b <= max_operand`` in the split, shuffled with ``seed``.

    ``path`` is ignored (the task is generated). ``num`` keeps the first ``num`` after shuffling.
    """
    if max_operand < 1:
        raise ValueError(f"max_operand={max_operand} must be >= 1")
    texts = [(f"{a}+{b}", a + b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    rows = [(text, answer) for text, answer in texts if in_split(text, split, test_percent)]
    return _finish(rows, "synthetic_addition", num, seed)


@DATASETS.register("arith_word")
def word_problems(path: str | None = None, split: str = "train", *, num: int = 2000, max_operand: int = 50,
                  seed: int = 0, test_percent: int = 10) -> list[MathProblem]:
    """One-step arithmetic word problems (add, subtract, multiply small numbers), ``num`` of them."""
    if num < 1 or max_operand < 2:
        raise ValueError(f"num={num} must be >= 1 and max_operand={max_operand} >= 2")
    rng = random.Random(f"arith_word/{split}/{seed}")
    rows: dict[str, int] = {}
    attempts = 0
    while len(rows) < num and attempts < 50 * num:
        attempts += 1
        text, answer = _word_problem(rng, max_operand)
        if in_split(text, split, test_percent):
            rows[text] = answer
    return _finish(list(rows.items()), "arith_word", None, seed)


def _word_problem(rng: random.Random, max_operand: int) -> tuple[str, int]:
    template, op = rng.choice(_WORD_TEMPLATES)
    name, pronoun = rng.choice(_NAMES)
    a, b = rng.randint(2, max_operand), rng.randint(2, max_operand)
    if op == "-" and b > a:
        a, b = b, a
    if op == "*":
        b = rng.randint(2, 9)
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    return template.format(name=name, pronoun=pronoun, item=rng.choice(_ITEMS), a=a, b=b), answer


def _finish(rows: list[tuple[str, int]], source: str, num: int | None, seed: int) -> list[MathProblem]:
    random.Random(seed).shuffle(rows)
    if num is not None:
        rows = rows[:num]
    return [MathProblem(problem=text, answer=str(answer), index=i, source=source) for i, (text, answer) in enumerate(rows)]
