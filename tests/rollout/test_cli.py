"""The ``python -m vortex_rl.generate`` command on a tiny safetensors model directory."""

from __future__ import annotations

import json

import pytest

from vortex_rl import generate
from vortex_rl.rollout import Engine, EngineConfig, SamplingParams


def test_cli_generates_what_the_engine_generates(make_tiny_hf_model, tmp_path, capsys):
    model = make_tiny_hf_model("qwen3")
    model.save_pretrained(tmp_path / "model")
    prompts = [list(range(1, 30)), [5, 6, 7]]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt_token_ids": p}) for p in prompts) + "\n")
    code = generate.main(["--model", str(tmp_path / "model"), "--prompts", str(tmp_path / "prompts.jsonl"),
                          "--max-new-tokens", "6", "--n", "2", "--num-pages", "16", "--max-model-len", "64",
                          "--budget-pages", "8", "--ignore-eos", "--output", str(tmp_path / "out.jsonl")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "peak KV pages" in printed
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["prompt_index"], r["sample_index"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    config = EngineConfig(num_pages=16, max_model_len=64, sparse=generate.SparseConfig(budget_pages=8))
    expected = Engine.from_pretrained(model, config=config).generate(
        prompts, SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True), n=2, use_tqdm=False)
    assert [r["token_ids"] for r in rows] == [c.token_ids for group in expected for c in group]


def test_prompt_file_without_prompts_is_rejected(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(ValueError, match="p.jsonl:1: expected a 'prompt' or 'prompt_token_ids' field"):
        generate.read_prompts(str(path))


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a"}', '', '{"prompt": "b"', '{"prompt": "c"}'], r"p.jsonl:3: not valid JSON \(Expecting ',' delimiter at column 15\)"),
    (['{"prompt_token_ids": [1, 2]}', '{"prompt_token_ids": [1.7, 2.2]}'], r"p.jsonl:2: prompt_token_ids=\[1.7, 2.2\] must be"),
    (['{"prompt_token_ids": [1, -2]}'], r"p.jsonl:1: prompt_token_ids=\[1, -2\] must be a non-empty list"),
    (['{"prompt_token_ids": ["1"]}'], r"p.jsonl:1: prompt_token_ids=\['1'\]"),
    (['[1, 2]'], "p.jsonl:1: expected a JSON object"),
])
def test_bad_prompt_lines_name_their_line(tmp_path, lines, message):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        generate.read_prompts(str(path))


def test_prompts_are_read_before_the_model_loads(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(SystemExit, match=rf"error: {path}: line 2 is not UTF-8"):  # not the model's error
        generate.main(["--model", str(tmp_path / "no-model"), "--prompts", str(path)])


def test_a_missing_model_is_one_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("hello\n")
    with pytest.raises(SystemExit, match=rf"error: --model '{tmp_path / 'no-model'}' could not be loaded"):
        generate.main(["--model", str(tmp_path / "no-model"), "--prompts", str(path)])
