"""Math datasets: Polaris-53K and AIME24 through `datasets`, and local JSONL / parquet files.

Every loader has the registry signature ``loader(path, split, **options) -> list[MathProblem]``:
``path`` is a hub id, a local directory or file, or ``None`` for the dataset's default source.
Local files may hold ``{problem, answer}`` rows or verl's schema (``prompt`` chat messages and
``reward_model.ground_truth``); the schema is detected per file from its first row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from vortex_rl.data.problem import MathProblem, problem_from_row, problem_from_verl_row
from vortex_rl.registry import Registry

DATASETS: Registry = Registry("dataset")

POLARIS_HUB_ID = "POLARIS-Project/Polaris-Dataset-53K"
AIME24_HUB_ID = "HuggingFaceH4/aime_2024"
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def load_problems(name: str, path: str | None = None, split: str = "train", **options: Any) -> list[MathProblem]:
    """Load the registered dataset ``name`` (see ``DATASETS.names()``)."""
    return DATASETS.get(name)(path, split, **options)


@DATASETS.register("file")
def load_file(path: str | None, split: str = "train", *, problem_key: str = "problem", answer_key: str = "answer",
              source: str | None = None) -> list[MathProblem]:
    """A local ``.jsonl`` / ``.json`` (one object per line) or ``.parquet`` file; ``split`` is ignored."""
    if path is None:
        raise ValueError("dataset 'file' needs a path to a .jsonl, .json or .parquet file")
    rows = read_rows(path)
    return rows_to_problems(rows, source or Path(path).stem, problem_key=problem_key, answer_key=answer_key)


@DATASETS.register("polaris")
def load_polaris(path: str | None = None, split: str = "train", **options: Any) -> list[MathProblem]:
    """Polaris-53K (``problem``, ``answer``): the hub id by default, or a local copy / file."""
    return _hub_or_file(path or POLARIS_HUB_ID, split, source="polaris", **options)


@DATASETS.register("aime24")
def load_aime24(path: str | None = None, split: str = "train", **options: Any) -> list[MathProblem]:
    """AIME 2024, 30 problems (``problem``, ``answer``): the hub id by default, or a local copy / file."""
    return _hub_or_file(path or AIME24_HUB_ID, split, source="aime24", **options)


def rows_to_problems(rows: Iterable[Mapping[str, Any]], source: str, *, problem_key: str = "problem",
                     answer_key: str = "answer") -> list[MathProblem]:
    """Convert rows, choosing verl's schema when the first row has ``prompt`` and ``reward_model``."""
    problems: list[MathProblem] = []
    verl_schema: bool | None = None
    for index, row in enumerate(rows):
        if verl_schema is None:
            verl_schema = problem_key not in row and "prompt" in row and "reward_model" in row
        if verl_schema:
            problems.append(problem_from_verl_row(row, index, source))
        else:
            problems.append(problem_from_row(row, index, source, problem_key=problem_key, answer_key=answer_key))
    if not problems:
        raise ValueError(f"{source}: the dataset has no rows")
    return problems


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a local JSONL/JSON-lines or parquet file as dicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("reading parquet needs pyarrow: pip install 'vortex-rl[train]'") from e
        return pq.read_table(path).to_pylist()
    raise ValueError(f"dataset file {str(path)!r}: suffix {suffix!r} not supported; use one of {FILE_SUFFIXES}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line_number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {line_number} is not valid JSON ({e.msg})") from None
    return rows


def read_text_lines(path: str | os.PathLike) -> Iterable[str]:
    """The lines of a UTF-8 text file; a line that is not UTF-8 raises naming the file, the line and the
    byte offset within it (``UnicodeDecodeError`` alone names only a position in some read buffer)."""
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: line {line_number} is not UTF-8 (byte {e.start} of the line: "
                                 f"{raw[e.start:e.start + 1]!r}); re-encode the file as UTF-8") from None


def _hub_or_file(path: str, split: str, *, source: str, **options: Any) -> list[MathProblem]:
    if Path(path).suffix.lower() in FILE_SUFFIXES and Path(path).is_file():
        return load_file(path, split, source=source, **options)
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"loading {source} from {path!r} needs the `datasets` package: pip install 'vortex-rl[train]' "
            "(or pass a local .jsonl/.parquet file)"
        ) from e
    table = datasets.load_dataset(path, split=split)
    return rows_to_problems(table, source, **options)
