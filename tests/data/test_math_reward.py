"""Math rewards: boxed extraction, a table of answer pairs through math-verify, time-outs and errors counted."""

import signal
import time

import pytest

from vortex_rl.data import REWARDS, RewardPool, last_boxed
from vortex_rl.data.math_reward import boxed_exact_reward

pytest.importorskip("math_verify")

# (response, ground truth, expected score): equivalence is math-verify's, labels are by hand.
TABLE = [
    ("so the answer is \\boxed{0.5}", "\\frac{1}{2}", 1.0),            # fraction vs decimal
    ("\\boxed{1/2}", "\\frac12", 1.0),
    ("\\boxed{\\dfrac{3}{4}}", "0.75", 1.0),
    ("\\boxed{\\frac{6}{8}}", "\\frac{3}{4}", 1.0),                    # unreduced fraction
    ("\\boxed{12 \\text{ cm}}", "12", 1.0),                            # units
    ("\\boxed{10^\\circ}", "10", 1.0),                                 # degrees
    ("\\boxed{\\sqrt 2}", "\\sqrt{2}", 1.0),                           # LaTeX forms
    ("\\boxed{1+x}", "x+1", 1.0),                                      # algebraic equivalence
    ("\\boxed{(1, 2)}", "(1,2)", 1.0),
    ("first \\boxed{3} then corrected: \\boxed{4}", "4", 1.0),        # the last box counts
    ("first \\boxed{4} then corrected: \\boxed{3}", "4", 0.0),
    ("\\boxed{5}", "4", 0.0),                                          # wrong
    ("\\boxed{\\frac{1}{3}}", "0.33", 0.0),
    ("the answer is 4", "4", 0.0),                                     # no box
    ("}}{{\\frac garbage \\boxed{", "4", 0.0),                         # garbage, unclosed box
    ("\\boxed{}", "4", 0.0),                                           # empty box
]
PATHOLOGICAL = "\\boxed{9^{9^{9^{9^{9}}}}}"  # sympy evaluates the tower: never finishes


@pytest.mark.parametrize("text, expected", [
    ("a \\boxed{1} b \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"), ("\\boxed{a{b}c}", "a{b}c"), ("\\fbox{7}", "7"),
    ("\\boxed {3}", "3"), ("no box", None), ("\\boxed{unclosed", None), ("\\boxed{a} \\boxed{b", "a"),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_table_in_process():
    pool = RewardPool("math", num_workers=0, timeout_s=5.0)
    result = pool.score([r for r, _, _ in TABLE], [g for _, g, _ in TABLE])
    assert result.scores == [s for _, _, s in TABLE]
    assert (result.num_timeouts, result.num_errors) == (0, 0)


def test_table_in_workers_with_a_pathological_answer():
    responses = [r for r, _, _ in TABLE] + [PATHOLOGICAL]
    truths = [g for _, g, _ in TABLE] + ["3"]
    # 5 s: the tower never finishes, and a loaded machine must not time out the table's sympy checks.
    with RewardPool("math", num_workers=2, timeout_s=5.0) as pool:
        start = time.perf_counter()
        result = pool.score(responses, truths)
        elapsed = time.perf_counter() - start
        assert result.scores == [s for _, _, s in TABLE] + [0.0]
        assert (result.num_timeouts, result.num_errors) == (1, 0)
        assert "5.0s" in result.errors[0]
        assert pool.score(["\\boxed{2}"], ["2"]).scores == [1.0]  # the worker survived its time-out
    assert elapsed < 30


def raising_reward(response: str, ground_truth: str) -> float:
    if response == "boom":
        raise RuntimeError("reward crashed")
    return 1.0


def deaf_reward(response: str, ground_truth: str) -> float:
    # Blocks SIGALRM the way a C extension stuck in a loop would ignore it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(60)
    return 1.0


@pytest.mark.parametrize("num_workers", [0, 1])
def test_exceptions_score_zero_and_are_counted(num_workers):
    with RewardPool(raising_reward, num_workers=num_workers, timeout_s=2.0) as pool:
        result = pool.score(["ok", "boom", "ok"], ["1", "1", "1"])
    assert result.scores == [1.0, 0.0, 1.0]
    assert (result.num_errors, result.num_timeouts) == (1, 0)
    assert "RuntimeError: reward crashed" in result.errors[0]


def test_watchdog_replaces_a_worker_that_ignores_its_alarm():
    with RewardPool(deaf_reward, num_workers=1, timeout_s=0.5, grace_s=1.0) as pool:
        start = time.perf_counter()
        result = pool.score(["x"], ["1"])
        assert time.perf_counter() - start < 20
        assert result.scores == [0.0] and result.num_timeouts == 1
        # the stuck worker was killed: the next batch gets a fresh one (a reused stuck one would hang it)
        start = time.perf_counter()
        assert pool.score(["x"], ["1"]).num_timeouts == 1 and time.perf_counter() - start < 20


@pytest.mark.parametrize("response, truth, expected", [
    ("The final answer is 54.", "54", 1.0),            # no box: the last number
    ("6 * 9 = 54 pencils, so 54", "54", 1.0),
    ("first 54, finally 56", "54", 0.0),
    ("a total of 1,234 apples", "1234", 1.0),
    ("half: 7/2", "3.5", 1.0),
    ("\\boxed{56} although 54", "54", 0.0),           # a box wins over later numbers
    ("no number at all", "54", 0.0),
])
def test_lenient_reward(response, truth, expected):
    assert REWARDS.get("math_lenient")(response, truth) == expected


def test_boxed_exact_and_registry():
    assert boxed_exact_reward("\\boxed{ 1 2 }", "12") == 1.0
    assert boxed_exact_reward("\\boxed{0.5}", "\\frac12") == 0.0
    assert set(REWARDS.names()) >= {"math", "math_lenient", "boxed_exact"}
    with pytest.raises(ValueError, match=r"unknown reward 'mathverify'; known: boxed_exact, math, math_lenient"):
        RewardPool("mathverify")
    with pytest.raises(ValueError, match="2 responses but 1 ground truths"):
        RewardPool("math", num_workers=0).score(["a", "b"], ["1"])


def test_cached_parses_score_as_uncached_math_verify():
    """References and answers are parsed once per worker; the scores equal math-verify's own parse and
    verify on fresh objects, on first use and on reuse (verify must not alter what the cache holds)."""
    from math_verify import parse, verify

    from vortex_rl.data.math_reward import math_verify_reward

    pairs = [("\\boxed{1/2}", "\\frac{1}{2}"), ("\\boxed{0.5}", "\\frac{1}{2}"), ("\\boxed{\\{1,2\\}}", "\\{2,1\\}"),
             ("\\boxed{(0,1]}", "(0,1]"), ("\\boxed{3}", "4"), ("\\boxed{x^2+1}", "1+x^2"), ("\\boxed{1/2}", "0.5")]
    for _ in range(2):
        for response, truth in pairs:
            direct = float(verify(parse(f"$\\boxed{{{truth}}}$"), parse(f"$\\boxed{{{response[7:-1]}}}$")))
            assert math_verify_reward(response, truth) == direct, (response, truth)
