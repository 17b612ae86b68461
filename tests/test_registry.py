"""The one ``Registry`` of the package: registration, lookup, and the one error type for unknown names."""

import pytest

from vortex_rl.registry import Registry, RegistryError


def test_register_get_names():
    things = Registry("thing")

    @things.register("b")
    def b():
        return 2

    @things.register("a")
    def a():
        return 1

    assert things.get("a")() == 1 and things.names() == ["a", "b"] and list(things) == ["a", "b"] and len(things) == 2
    assert "a" in things and "c" not in things and ["unhashable"] not in things
    things.register("a")(a)  # the same function again (a re-imported module) is accepted
    things.unregister("b")
    assert things.names() == ["a"]
    with pytest.raises(RegistryError, match="unknown thing 'b'"):
        things.unregister("b")


def test_unknown_and_clashing_names_raise_registry_error():
    things = Registry("thing")

    def one():
        return 1

    def two():
        return 2

    things.register("a")(one)
    with pytest.raises(RegistryError, match=r"unknown thing 'z'; known: a") as info:
        things.get("z")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value) == "unknown thing 'z'; known: a"  # not KeyError's quoted repr
    with pytest.raises(RegistryError, match="already registered"):
        things.register("a")(two)
    with pytest.raises(RegistryError, match="non-empty string"):
        things.register("")
    with pytest.raises(RegistryError, match=r"x\.mode='z' is not a registered thing; known: a"):
        things.check_name("z", "x.mode")


def test_check_refuses_entries():
    def only_classes(name, entry):
        if not isinstance(entry, type):
            raise TypeError(f"{name}: classes only")

    kinds = Registry("kind", check=only_classes)
    kinds.register("k")(int)
    with pytest.raises(TypeError, match="classes only"):
        kinds.register("f")(lambda: 0)


def test_every_registry_of_the_package_raises_the_same_error():
    from vortex_rl.data.loaders import DATASETS
    from vortex_rl.data.math_reward import REWARDS
    from vortex_rl.sparse import get_flow
    from vortex_rl.trainers.algos.core_algos import ADV_ESTIMATORS, KL_ESTIMATORS, POLICY_LOSSES
    from vortex_rl.trainers.algos.dynamic_sampling import DYNAMIC_SAMPLING
    from vortex_rl.trainers.algos.rollout_correction import ROLLOUT_IS

    for registry in (DATASETS, REWARDS, ADV_ESTIMATORS, KL_ESTIMATORS, POLICY_LOSSES, DYNAMIC_SAMPLING, ROLLOUT_IS):
        with pytest.raises(RegistryError, match="known: "):
            registry.get("no-such-name")
    with pytest.raises(RegistryError, match="no-such-flow"):
        get_flow("no-such-flow")
