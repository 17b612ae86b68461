"""Prompts through the chat template, instruction appended, over-long prompts filtered and counted."""

import pytest

from vortex_rl.data import BOXED_INSTRUCTION, MathProblem, build_char_tokenizer, build_prompts, encode_prompt


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def test_chat_template_and_instruction(tokenizer):
    problem = MathProblem(problem="1+2", answer="3", index=0, source="t")
    ids = encode_prompt(problem, tokenizer, instruction="Box it.")
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "1+2 Box it."}], add_generation_prompt=True,
                                             tokenize=False)
    assert tokenizer.decode(ids) == expected == "<bos>1+2 Box it.="
    assert tokenizer.decode(encode_prompt(problem, tokenizer, instruction="")) == "<bos>1+2="


def test_verl_messages_are_used_as_given(tokenizer):
    messages = ({"role": "system", "content": "S:"}, {"role": "user", "content": "Q"})
    problem = MathProblem(problem="Q", answer="1", index=0, source="t", messages=messages)
    assert tokenizer.decode(encode_prompt(problem, tokenizer)) == "<bos>S:Q="


def test_tokenizer_without_chat_template(tokenizer):
    plain = build_char_tokenizer()
    plain.chat_template = None
    problem = MathProblem(problem="7*6", answer="42", index=0, source="t")
    assert plain.decode(encode_prompt(problem, plain, instruction="ok"), skip_special_tokens=True) == "7*6 ok"


def test_overlong_prompts_filtered_and_counted(tokenizer):
    problems = [MathProblem(problem="x" * n, answer="1", index=i, source="t") for i, n in enumerate([3, 30, 5, 40])]
    result = build_prompts(problems, tokenizer, max_prompt_length=10, instruction="")
    assert [p.problem.index for p in result.prompts] == [0, 2]
    assert result.num_filtered == 2 and result.filtered_indices == [1, 3]
    assert all(len(p.token_ids) <= 10 for p in result.prompts)
    with pytest.raises(ValueError, match=r"t: row 1 has a 32-token prompt, over max_prompt_length=10"):
        build_prompts(problems, tokenizer, max_prompt_length=10, instruction="", filter_overlong=False)
    with pytest.raises(ValueError, match="all 4 prompts exceed"):
        build_prompts(problems, tokenizer, max_prompt_length=2, instruction="")


def test_default_instruction_asks_for_boxed():
    assert "\\boxed{}" in BOXED_INSTRUCTION
