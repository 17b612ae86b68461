"""Recipes compose through Hydra; unknown recipes, keys and bad values fail with what is valid."""

import pytest

pytest.importorskip("hydra", reason="composing recipes needs hydra-core")

from vortex_rl.train import available_recipes, compose_config, main, split_args
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.config.dataclass_dicts import ConfigKeyError, defaults_dict, from_dict, valid_keys

RECIPES = ["qwen3_0p6b_polaris", "qwen3_4b_polaris", "smollm2_arith", "tiny_cpu", "tiny_retrieval"]


def test_every_recipe_composes():
    assert available_recipes() == RECIPES
    for name in RECIPES:
        config = compose_config(name)
        assert isinstance(config, GRPOConfig) and config.recipe == name
    big = compose_config("qwen3_4b_polaris")
    assert (big.data.train_batch_size, big.rollout.n, big.data.max_response_length) == (128, 8, 8192)
    assert (big.rollout.sparse.page_size, big.rollout.sparse.budget_pages, big.rollout.temperature) == (16, 32, 1.4)
    assert (big.actor.optim.lr, big.actor.clip_ratio_low, big.actor.clip_ratio_high, big.actor.use_kl_loss) == (
        1e-6, 0.2, 0.28, False)
    assert (big.data.val_dataset, big.rollout.val_kwargs.n) == ("aime24", 8)


def test_overrides_apply():
    config = compose_config("tiny_cpu", ["actor.optim.lr=1e-5", "rollout.sparse.budget_pages=8", "trainer.logger=[console]",
                                         "data.train_options.max_operand=5", "+model.override_config.rope_theta=500.0"])
    assert config.actor.optim.lr == 1e-5 and config.rollout.sparse.budget_pages == 8
    assert config.trainer.logger == ["console"] and config.data.train_options == {"max_operand": 5}
    assert config.model.override_config["rope_theta"] == 500.0
    assert split_args(["recipe=smollm2_arith", "a.b=1"]) == ("smollm2_arith", ["a.b=1"])
    assert split_args([]) == ("tiny_cpu", [])


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown recipe 'tiny'; available recipes: " + ", ".join(RECIPES)):
        compose_config("tiny")


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigKeyError, match=r"unknown config key 'actor.optim.lrr'. Did you mean 'actor.optim.lr'\? "
                                             r"Valid keys at 'actor.optim': lr, weight_decay, betas, eps, lr_warmup_steps"):
        compose_config("tiny_cpu", ["actor.optim.lrr=1"])
    with pytest.raises(ConfigKeyError, match=r"unknown config key 'trainr'.*Valid keys at the top level: recipe, model"):
        compose_config("tiny_cpu", ["trainr.total_steps=1"])
    with pytest.raises(ConfigKeyError, match="unknown config key 'data.foo'"):
        from_dict(GRPOConfig, {"data": {"foo": 1}})
    assert "actor.optim.lr" in valid_keys(GRPOConfig) and "rollout.sparse.budget_pages" in valid_keys(GRPOConfig)


@pytest.mark.parametrize("override, message", [
    ("actor.optim.lr=abc", "actor.optim.lr='abc' must be a number"),
    ("rollout.n=2.5", "rollout.n=2.5 must be an integer"),
    ("rollout.flow=nope", "rollout.flow='nope' is not a registered flow"),
    ("rollout.engine=vllm", r"rollout.engine='vllm' must be one of \('vortex', 'sglang'\)"),
    ("rollout.n=1", "GRPO compares samples of a prompt, so it needs rollout.n >= 2"),
    ("actor.ppo_mini_batch_size=5", "actor.ppo_mini_batch_size=5 must divide data.train_batch_size=32"),
    ("actor.policy_loss=gspo", r"actor.policy_loss='gspo' is not a registered policy loss; known: vanilla"),
    ("algorithm.dynamic_sampling=dapo", r"algorithm.dynamic_sampling='dapo' is not a registered dynamic sampling mode; known: none, polaris"),
    ("algorithm.rollout_correction.rollout_is=seq", r"rollout_is='seq' is not a registered rollout importance-sampling mode; known: geometric, sequence, token"),
    ("reward.fn=mathh", r"reward.fn='mathh' is not a registered reward; known: boxed_exact, math, math_lenient"),
    ("data.val_dataset=aime25", r"data.val_dataset='aime25' is not a registered dataset; known: "),
    ("rollout.seed=3", "rollout.seed=3 is set from trainer.seed; set trainer.seed instead"),
    ("rollout.device=cpu", "rollout.device='cpu' is set from trainer.device"),
    ("trainer.placement=disaggregated", "config key 'trainer.placement' moved to 'cluster.placement'"),
    ("trainer.orchestrator=slurm", "trainer.orchestrator='slurm' is not available"),
    ("data.train_options.nope=1", "add a key to a free-form dict field with \\+key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises((ValueError, TypeError, KeyError), match=message):
        compose_config("tiny_cpu", [override])


def test_cli_exits_with_the_config_error(capsys):
    with pytest.raises(SystemExit, match="config error: unknown recipe 'nope'"):
        main(["recipe=nope"])
    with pytest.raises(SystemExit, match="is not key=value"):
        main(["tiny_cpu"])


def test_defaults_dict_matches_constructed_defaults():
    from vortex_rl.trainers.config.dataclass_dicts import to_plain

    defaults = defaults_dict(GRPOConfig)
    built = to_plain(from_dict(GRPOConfig, {"model": {"path": "x"}}))
    built["model"]["path"] = ""
    assert defaults == built
