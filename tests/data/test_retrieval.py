"""The key-value retrieval task: each answer is read back from its own prompt text, splits are disjoint."""

import re

import pytest

from vortex_rl.data import load_problems


@pytest.mark.parametrize("num_pairs", [1, 3, 8])
def test_answer_is_the_value_after_the_asked_key(num_pairs):
    problems = load_problems("kv_retrieval", split="train", num=50, num_pairs=num_pairs, context_chars=96, margin=10)
    assert len(problems) == 50
    for p in problems:
        body, asked = p.problem.split("?")
        assert len(body) == 96 and len(asked) == 1 and asked.islower()
        pairs = [(m.start(), m.group(1), m.group(2)) for m in re.finditer(r"([a-z])(\d)", body)]
        assert len(pairs) == num_pairs  # one digit per pair, the rest letters
        assert all(10 <= start < 96 - 10 for start, _, _ in pairs)  # never on the sink or recent pages
        value = {key: digit for _, key, digit in pairs}[asked]
        assert p.answer == value


def test_splits_are_disjoint_and_deterministic():
    train = load_problems("kv_retrieval", split="train", num=200)
    test = load_problems("kv_retrieval", split="test", num=30)
    assert not {p.problem for p in train} & {p.problem for p in test}
    assert [p.problem for p in load_problems("kv_retrieval", split="test", num=30)] == [p.problem for p in test]


def test_bad_options_name_the_value():
    with pytest.raises(ValueError, match="num_pairs=27 must lie in 1..26"):
        load_problems("kv_retrieval", num_pairs=27)
    with pytest.raises(ValueError, match="context_chars=30 must leave room for 8 pairs"):
        load_problems("kv_retrieval", num_pairs=8, context_chars=30, margin=10)
