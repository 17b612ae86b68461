"""Command line: ``python -m vortex_rl.train recipe=<name> key=value ...``.

The config is composed with Hydra's compose API: the defaults of ``GRPOConfig`` (registered as
``vortex_base``), then ``recipes/<name>.yaml``, then the overrides (Hydra syntax: ``a.b=1``,
``trainer.logger=[console]``, ``+data.train_options.max_operand=9`` for a new key in a free-form dict).
The resolved config is printed and saved as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

DEFAULT_RECIPE = "tiny_cpu"
BASE_NAME = "vortex_base"


def recipe_dir() -> Path:
    """The recipe YAML files: ``vortex_rl/recipes`` (a link to the repository's ``recipes/``, packaged in
    the wheel), else the repository's ``recipes/`` itself."""
    here = Path(__file__).resolve().parent
    for candidate in (Path(__file__).parent / "recipes", here.parent / "recipes"):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise FileNotFoundError(f"no recipes found next to {here} (expected vortex_rl/recipes/*.yaml)")


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml") if not p.stem.startswith("_"))


def split_args(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``recipe=<name>`` and the remaining ``key=value`` overrides."""
    recipe, overrides = DEFAULT_RECIPE, []
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"argument {arg!r} is not key=value; usage: python -m vortex_rl.train recipe=<name> key=value ...")
        if arg.startswith("recipe="):
            recipe = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return recipe, overrides


def compose_config(recipe: str, overrides: Sequence[str] = ()):
    """The ``GRPOConfig`` of ``recipe`` with ``overrides`` applied; unknown recipes or keys raise with the valid ones."""
    from vortex_rl.trainers.config import GRPOConfig
    from vortex_rl.trainers.config.dataclass_dicts import check_key, defaults_dict, from_dict

    recipes = available_recipes()
    if recipe not in recipes:
        raise ValueError(f"unknown recipe {recipe!r}; available recipes: {', '.join(recipes)}")
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "recipe":
            continue
        check_key(GRPOConfig, key)
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.config_store import ConfigStore
        from omegaconf import OmegaConf
    except ImportError as e:  # pragma: no cover - hydra-core is a core dependency
        raise ImportError("composing recipes needs hydra-core: pip install hydra-core") from e
    from hydra.errors import HydraException

    ConfigStore.instance().store(name=BASE_NAME, node=defaults_dict(GRPOConfig))
    try:
        with initialize_config_dir(config_dir=str(recipe_dir()), version_base=None):
            composed = compose(config_name=recipe, overrides=list(overrides))
    except HydraException as e:  # bad override syntax, or a new dict key given without '+'
        hint = " (add a key to a free-form dict field with +key=value)" if "append" in str(e) else ""
        raise ValueError(f"{e}{hint}") from None
    data = OmegaConf.to_container(composed, resolve=True)
    data["recipe"] = recipe
    return from_dict(GRPOConfig, data)


def main(argv: Sequence[str] | None = None) -> Path:
    """Compose the config (a config error exits with its message), then train; returns the run directory."""
    from vortex_rl.trainers.run.loop import train
    from vortex_rl.trainers.run.run_dir import resolve_run_dir
    from vortex_rl.trainers.config.dataclass_dicts import ConfigKeyError

    try:
        recipe, overrides = split_args(sys.argv[1:] if argv is None else argv)
        config = compose_config(recipe, overrides)
    except (ConfigKeyError, ValueError, TypeError) as e:
        raise SystemExit(f"config error: {e}") from None
    return train(config, resolve_run_dir(config, Path.cwd()))


if __name__ == "__main__":
    main()
