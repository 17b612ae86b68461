"""Long-context key-value retrieval: a synthetic task where sparse decode attention has to find the right page.

A prompt is a few hundred characters of random lowercase letters with ``num_pairs`` key-value pairs (a
lowercase key right before its digit value, ``"q7"``) at random places, then the question ``"?q"``; the
answer is the digit (``\\boxed{7}``). With the character tokenizer every character is a token, so the pair
that answers lies on one KV page somewhere in the middle of the context: a decode step that does not
attend to that page can only guess (1 in 10). Sink and recent pages never hold it, since pairs are kept
out of the first and last ``margin`` characters.

With one pair (the default) the digit is a needle in letter noise and a tiny model learns to find it in
a short supervised warm-up; with several the key must be matched (an induction head), which a tiny model
does not learn within a CPU warm-up (600 steps: chance accuracy).
"""

from __future__ import annotations

import random
import string

from vortex_rl.data.loaders import DATASETS
from vortex_rl.data.problem import MathProblem
from vortex_rl.data.synthetic import in_split



def retrieval_prompt(rng: random.Random, *, num_pairs: int, context_chars: int, margin: int) -> tuple[str, str]:
    """``(text, answer)``: ``context_chars`` characters of letter noise and pairs, then ``"?<key>"``."""
    keys = rng.sample(string.ascii_lowercase, num_pairs)
    values = [str(rng.randrange(10)) for _ in keys]
    slots = sorted(rng.sample(range(margin, context_chars - margin - 1, 2), num_pairs))  # even: pairs never touch
    chars = [rng.choice(string.ascii_lowercase) for _ in range(context_chars)]
    for slot, key, value in zip(slots, keys, values):
        chars[slot], chars[slot + 1] = key, value
    asked = rng.randrange(num_pairs)
    return "".join(chars) + "?" + keys[asked], values[asked]


@DATASETS.register("kv_retrieval")
def retrieval_problems(path: str | None = None, split: str = "train", *, num: int = 4000, num_pairs: int = 1,
                       context_chars: int = 160, margin: int = 24, seed: int = 0, test_percent: int = 10
                       ) -> list[MathProblem]:
    """``num`` retrieval prompts of the ``split`` (``path`` is ignored: the task is generated).

    ``num_pairs`` keys (distinct letters) with digit values, placed at even offsets in
    ``[margin, context_chars - margin)``; train and test are disjoint by the CRC32 rule of
    ``synthetic.in_split``.
    """
    if not 1 <= num_pairs <= 26:
        raise ValueError(f"num_pairs={num_pairs} must lie in 1..26 (one lowercase letter per key)")
    room = (context_chars - 2 * margin - 1) // 2
    if num < 1 or margin < 0 or room < num_pairs:
        raise ValueError(f"num={num} must be >= 1, margin={margin} >= 0, and context_chars={context_chars} must leave "
                         f"room for {num_pairs} pairs between the margins (room for {max(room, 0)})")
    rng = random.Random(f"kv_retrieval/{split}/{seed}")
    rows: dict[str, str] = {}
    attempts = 0
    while len(rows) < num and attempts < 50 * num:
        attempts += 1
        text, answer = retrieval_prompt(rng, num_pairs=num_pairs, context_chars=context_chars, margin=margin)
        if in_split(text, split, test_percent):
            rows[text] = answer
    return [MathProblem(problem=text, answer=answer, index=i, source="kv_retrieval")
            for i, (text, answer) in enumerate(rows.items())]
