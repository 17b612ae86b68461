"""Generated tasks: answers checked by recomputing them from the text; splits disjoint and complete."""

import re

import pytest

from vortex_rl.data import load_problems


def test_addition_answers_and_splits():
    train = load_problems("synthetic_addition", split="train", max_operand=9)
    test = load_problems("synthetic_addition", split="test", max_operand=9)
    for p in train + test:
        a, b = map(int, p.problem.split("+"))
        assert int(p.answer) == a + b
    texts = [p.problem for p in train + test]
    assert len(set(texts)) == len(texts) == 100  # every pair exactly once
    assert 10 <= len(test) <= 30  # about test_percent=20 of them
    assert [p.problem for p in load_problems("synthetic_addition", max_operand=9)] == [p.problem for p in train]
    assert len(load_problems("synthetic_addition", max_operand=9, num=5)) == 5


def test_word_problem_answers():
    ops = {"more": "+", "afternoon": "+", "gave": "-", "takes away": "-", "boxes": "*", "each bag": "*"}
    problems = load_problems("arith_word", num=60, seed=3)
    assert len(problems) == 60
    for p in problems:
        a_or_first, second = [int(x) for x in re.findall(r"\d+", p.problem)]
        op = next(o for key, o in ops.items() if key in p.problem)
        expected = {"+": a_or_first + second, "-": a_or_first - second, "*": a_or_first * second}[op]
        assert int(p.answer) == expected and expected >= 0
    test = {p.problem for p in load_problems("arith_word", split="test", num=30)}
    assert not test & {p.problem for p in load_problems("arith_word", num=500)}


def test_bad_split():
    with pytest.raises(ValueError, match=r"split='validation' not supported .* \('train', 'test'\)"):
        load_problems("synthetic_addition", split="validation")
