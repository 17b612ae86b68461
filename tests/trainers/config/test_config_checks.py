"""Checks at composition, before anything loads: sampling values through the engine's own
``SamplingParams`` checks, sparse errors under their ``rollout.sparse.`` key; a dataset switch that does
not drag the recipe's loader options along; Hydra's ``~key`` delete."""

import pytest

pytest.importorskip("hydra", reason="composing recipes needs hydra-core")

from vortex_rl.rollout import SamplingParams
from vortex_rl.train import compose_config, main, split_args


@pytest.mark.parametrize("override, message", [
    ("rollout.top_p=0", r"rollout.top_p=0.0 must be in \(0, 1\]"),
    ("rollout.top_p=1.5", r"rollout.top_p=1.5 must be in \(0, 1\]"),
    ("rollout.top_k=-5", "rollout.top_k=-5 must be -1 or 0"),
    ("rollout.val_kwargs.top_p=2", r"rollout.val_kwargs.top_p=2.0 must be in \(0, 1\]"),
    ("rollout.val_kwargs.top_k=-2", "rollout.val_kwargs.top_k=-2 must be -1 or 0"),
    ("rollout.sparse.page_size=3", "^rollout.sparse.page_size=3 must be a positive power of two"),
    ("rollout.sparse.budget_pages=0", "^rollout.sparse.budget_pages: budget 0 < sink_pages"),
    ("reward.fn=nope", "^reward.fn='nope' is not a registered reward"),
])
def test_bad_sampling_and_sparse_values_fail_at_composition(override, message):
    with pytest.raises(ValueError, match=message):
        compose_config("tiny_cpu", [override])


def test_sampling_checks_agree_with_the_engine():
    for top_p, top_k in ((0.5, 0), (1.0, -1), (0.9, 40), (1e-3, 1)):  # what SamplingParams takes, composition takes
        SamplingParams(temperature=1.0, top_p=top_p, top_k=top_k)
        config = compose_config("tiny_cpu", [f"rollout.top_p={top_p}", f"rollout.top_k={top_k}"])
        assert (config.rollout.top_p, config.rollout.top_k) == (top_p, top_k)


def test_switching_the_dataset_resets_the_recipe_options(tmp_path, capsys):
    config = compose_config("tiny_cpu", ["data.train_dataset=file", f"data.train_files={tmp_path / 'x.jsonl'}"])
    assert config.data.train_options == {} and config.data.val_options == {"max_operand": 9}
    assert "data.train_options={'max_operand': 9} belonged to the recipe's 'synthetic_addition'" in capsys.readouterr().err
    kept = compose_config("tiny_cpu", ["data.train_dataset=arith_word", "+data.train_options.seed=3"])
    assert kept.data.train_options == {"max_operand": 9, "seed": 3}  # options given with the switch are the user's
    same = compose_config("tiny_cpu", ["data.train_dataset=synthetic_addition"])
    assert same.data.train_options == {"max_operand": 9}  # not a switch
    val = compose_config("tiny_cpu", ["data.val_dataset=file", "data.val_files=v.jsonl"])
    assert val.data.val_options == {} and val.data.train_options == {"max_operand": 9}


def test_hydra_delete_syntax_is_accepted():
    recipe, overrides = split_args(["recipe=tiny_cpu", "~data.train_options.max_operand", "~rollout.val_kwargs=null"])
    assert (recipe, overrides) == ("tiny_cpu", ["~data.train_options.max_operand", "~rollout.val_kwargs=null"])
    config = compose_config("tiny_cpu", ["~data.train_options.max_operand"])
    assert config.data.train_options == {} and config.data.val_options == {"max_operand": 9}
    with pytest.raises(SystemExit, match="is not key=value"):
        main(["~"])
