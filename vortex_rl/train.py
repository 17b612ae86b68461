"""Command line: ``python -m vortex_rl.train recipe=<name> key=value ...``.

The config is composed with Hydra's compose API: the defaults of ``GRPOConfig`` (registered as
``vortex_base``), then ``recipes/<name>.yaml``, then the overrides (Hydra syntax: ``a.b=1``,
``trainer.logger=[console]``, ``+data.train_options.max_operand=9`` for a new key in a free-form dict,
``~data.train_options.max_operand`` to delete one). Switching ``data.train_dataset`` (or ``val_dataset``)
away from the recipe's resets its ``*_options`` unless they are given too: they belong to the recipe's
dataset. The resolved config is printed and saved as ``config.yaml`` in the run directory.

Expected failures (a bad value, a missing file, a refused run directory) end with one line
``error: ...``; ``HYDRA_FULL_ERROR=1`` or ``VORTEX_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_RECIPE = "tiny_cpu"
BASE_NAME = "vortex_base"
DEBUG_ENV = ("HYDRA_FULL_ERROR", "VORTEX_DEBUG")
USAGE = "usage: python -m vortex_rl.train recipe=<name> key=value ... (~key deletes a key)"


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
    """``recipe=<name>`` and the remaining overrides (``key=value``, or Hydra's ``~key`` / ``~key=value`` delete)."""
    recipe, overrides = DEFAULT_RECIPE, []
    for arg in argv:
        if "=" not in arg and not (arg.startswith("~") and len(arg) > 1):
            raise ValueError(f"argument {arg!r} is not key=value; {USAGE}")
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
    reset_dataset_options(data, recipe, overrides)
    return from_dict(GRPOConfig, data)


def reset_dataset_options(data: dict, recipe: str, overrides: Sequence[str]) -> list[str]:
    """Empty ``data.<x>_options`` when ``data.<x>_dataset`` was switched from the recipe's dataset on the
    command line and no ``data.<x>_options`` override came with it (the recipe's options are arguments of
    the recipe's loader: ``max_operand`` means nothing to ``file``). Returns the keys reset, each named
    in a note."""
    import yaml

    recipe_data = (yaml.safe_load((recipe_dir() / f"{recipe}.yaml").read_text()) or {}).get("data") or {}
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    reset = []
    for which in ("train", "val"):
        name, options = f"{which}_dataset", f"{which}_options"
        switched = f"data.{name}" in keys and data["data"].get(name) != recipe_data.get(name)
        given = any(k == f"data.{options}" or k.startswith(f"data.{options}.") for k in keys)
        if switched and not given and data["data"].get(options):
            print(f"note: data.{options}={data['data'][options]} belonged to the recipe's {recipe_data.get(name)!r} "
                  f"dataset; reset to {{}} for data.{name}={data['data'][name]!r} (give data.{options} to set it)",
                  file=sys.stderr)
            data["data"][options] = {}
            reset.append(f"data.{options}")
    return reset


def main(argv: Sequence[str] | None = None) -> Path:
    """Compose the config, then train; returns the run directory. An expected failure exits with one line
    (``config error: ...`` while composing, ``error: ...`` after); with ``HYDRA_FULL_ERROR=1`` or
    ``VORTEX_DEBUG=1`` it raises with its traceback instead."""
    from vortex_rl.trainers.config.dataclass_dicts import ConfigKeyError
    from vortex_rl.trainers.run.loop import train
    from vortex_rl.trainers.run.run_dir import resolve_run_dir

    debug = any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_ENV)
    try:
        recipe, overrides = split_args(sys.argv[1:] if argv is None else argv)
        config = compose_config(recipe, overrides)
    except (ConfigKeyError, ValueError, TypeError) as e:
        if debug:
            raise
        raise SystemExit(f"config error: {one_line(e)}") from None
    try:
        return train(config, resolve_run_dir(config, Path.cwd()))
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:  # bad data, refused directory, ...
        if debug:
            raise
        raise SystemExit(f"error: {one_line(e)}  (traceback: HYDRA_FULL_ERROR=1)") from None


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    main()
