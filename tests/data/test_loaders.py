"""Dataset loaders on local JSONL / parquet files (plain and verl schema) and the dataset registry."""

import json

import pytest

from vortex_rl.data import DATASETS, MissingFieldError, load_problems, read_rows

ROWS = [{"problem": "What is 1/2 + 1/4?", "answer": "\\frac{3}{4}"}, {"problem": "2+2?", "answer": "4"}]
VERL_ROWS = [
    {"data_source": "x", "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Q1"}],
     "reward_model": {"style": "rule", "ground_truth": "7"}},
    {"data_source": "x", "prompt": [{"role": "user", "content": "Q2"}], "reward_model": {"style": "rule", "ground_truth": "8"}},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("writer, suffix", [(write_jsonl, "jsonl"), (write_parquet, "parquet")])
def test_plain_schema(tmp_path, writer, suffix):
    path = writer(tmp_path / f"train.{suffix}", ROWS)
    problems = load_problems("file", str(path))
    assert [(p.problem, p.answer, p.index, p.source) for p in problems] == [
        ("What is 1/2 + 1/4?", "\\frac{3}{4}", 0, "train"), ("2+2?", "4", 1, "train")]
    assert all(p.messages is None for p in problems)


@pytest.mark.parametrize("writer, suffix", [(write_jsonl, "jsonl"), (write_parquet, "parquet")])
def test_verl_schema(tmp_path, writer, suffix):
    problems = load_problems("file", str(writer(tmp_path / f"verl.{suffix}", VERL_ROWS)))
    assert [p.answer for p in problems] == ["7", "8"]
    assert problems[0].problem == "Q1"  # the last user turn
    assert [dict(m) for m in problems[0].messages] == VERL_ROWS[0]["prompt"]


@pytest.mark.parametrize("name", ["polaris", "aime24"])
def test_named_datasets_read_local_files(tmp_path, name):
    problems = load_problems(name, str(write_jsonl(tmp_path / "copy.jsonl", ROWS)))
    assert [p.answer for p in problems] == ["\\frac{3}{4}", "4"] and problems[0].source == name


def test_polaris_from_a_local_dataset_directory(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "polaris").mkdir()
    write_jsonl(tmp_path / "polaris" / "train.jsonl", ROWS)
    problems = load_problems("polaris", str(tmp_path / "polaris"), "train")
    assert [p.answer for p in problems] == ["\\frac{3}{4}", "4"]


@pytest.mark.parametrize("row, field", [
    ({"problem": "q"}, "answer"),
    ({"answer": "1"}, "problem"),
    ({"problem": None, "answer": "1"}, "problem"),
])
def test_missing_field_names_row_and_field(tmp_path, row, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], ROWS[1], row])
    with pytest.raises(MissingFieldError, match=rf"row 2 has no field '{field}'"):
        load_problems("file", str(path))


def test_verl_row_missing_ground_truth(tmp_path):
    bad = {"prompt": [{"role": "user", "content": "Q"}], "reward_model": {"style": "rule"}}
    with pytest.raises(MissingFieldError, match=r"row 1 has no field 'reward_model.ground_truth'"):
        load_problems("file", str(write_jsonl(tmp_path / "v.jsonl", [VERL_ROWS[0], bad])))


def test_numeric_and_list_answers_become_text(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"problem": "a", "answer": 4}, {"problem": "b", "answer": ["x+1"]}])
    assert [p.answer for p in load_problems("file", str(path))] == ["4", "x+1"]


def test_custom_field_names(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "solution": "5"}])
    assert load_problems("file", str(path), problem_key="question", answer_key="solution")[0].answer == "5"


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_rows(tmp_path / "none.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"suffix '.csv' not supported"):
        read_rows(tmp_path / "x.csv")
    (tmp_path / "broken.jsonl").write_text('{"problem": "q", "answer": 1}\n{not json}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_rows(tmp_path / "broken.jsonl")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'polaris53k'; known: .*aime24.*polaris"):
        load_problems("polaris53k")
    assert {"aime24", "polaris", "file", "synthetic_addition", "arith_word"} <= set(DATASETS.names())


def test_a_non_utf8_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"problem": "1+1", "answer": "2"}).encode()
    path.write_bytes(good + b"\n" + good + b"\n" + '{"problem": "café", "answer": "1"}'.encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=rf"{path}: line 3 is not UTF-8 \(byte 16 of the line: b'\\xe9'\)"):
        read_rows(path)
    path.write_bytes(good + b"\n" + '{"problem": "café", "answer": "1"}'.encode() + b"\n")  # the same text in UTF-8
    assert [p.problem for p in load_problems("file", str(path))] == ["1+1", "café"]
