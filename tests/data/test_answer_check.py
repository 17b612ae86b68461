"""Ground truths checked at load: math-verify's parse decides, bad rows are named and counted."""

import logging

import pytest

from vortex_rl.data import MathProblem
from vortex_rl.data.answer_check import check_ground_truths, parse_status
from vortex_rl.data.math_reward import math_verify_reward

pytest.importorskip("math_verify")


@pytest.mark.parametrize("answer, status", [
    ("\\frac{1}{2}", "ok"), ("3", "ok"), ("x^2+1", "ok"), ("(1,2)", "ok"), ("[0, 1)", "ok"), ("\\{1,2\\}", "ok"),
    ("\\frac{{{\\sqrt[}{", "unparseable"),   # comes back from math-verify as a bare string
    ("\\frac{}{}", "unparseable"), ("\\left(", "unparseable"), ("", "unparseable"),
])
def test_parse_status_follows_math_verify(answer, status):
    assert parse_status(answer)[0] == status


def test_unparseable_ground_truth_scores_zero_against_its_own_text():
    """Why the check exists: such a reference can never be matched, not even by itself."""
    bad = "\\frac{{{\\sqrt[}{"
    assert math_verify_reward(f"\\boxed{{{bad}}}", bad) == 0.0


def test_check_names_rows_and_counts():
    problems = [MathProblem("q", a, index=i, source="t") for i, a in enumerate(["1", "\\frac{{{\\sqrt[}{", "2", "\\frac{}{}"])]
    result = check_ground_truths(problems)
    assert result.checked == 4 and result.unparseable == [(1, "\\frac{{{\\sqrt[}{"), (3, "\\frac{}{}")] and result.errors == []
    assert result.metrics("train") == {"data/train_unparseable_answers": 2.0, "data/train_answer_errors": 0.0}
    lines = result.report("data.train_dataset")
    assert lines[0].startswith("data.train_dataset: row 1: ground truth") and "2 unparseable and 0 raising" in lines[-1]
    assert check_ground_truths(problems[:1]).report("x") == []


def test_an_empty_reference_raises_even_without_a_boxed_response():
    """It used to score 0 silently when the response had no box, so the error was never counted."""
    with pytest.raises(ValueError, match="could not be parsed"):
        math_verify_reward("no box here", "")


def test_load_prompts_counts_and_logs_bad_answers(tmp_path, caplog):
    from vortex_rl.data import build_char_tokenizer
    from vortex_rl.trainers.config.dataclass_dicts import from_dict
    from vortex_rl.trainers.config import GRPOConfig
    from vortex_rl.trainers.run.prompts import load_prompts

    path = tmp_path / "d.jsonl"
    path.write_text('{"problem": "1+1=", "answer": "2"}\n{"problem": "2+2=", "answer": "\\\\frac{}{}"}\n')
    config = from_dict(GRPOConfig, {"model": {"path": "random:qwen3"}, "rollout": {"n": 2},
                                    "data": {"train_dataset": "file", "train_files": str(path), "train_batch_size": 1,
                                             "instruction": ""}})
    with caplog.at_level(logging.WARNING):
        _, _, metrics = load_prompts(config, build_char_tokenizer())
    assert metrics["data/train_unparseable_answers"] == 1.0 and metrics["data/train_answer_errors"] == 0.0
    assert "row 1: ground truth '\\\\frac{}{}'" in caplog.text
