"""Sampling parameters per prompt and the seeds a step derives from the run's seed."""

from vortex_rl.rollout import SamplingParams
from vortex_rl.trainers.step.sampling import per_prompt_params
from vortex_rl.trainers.step.seeds import SEED_MODULUS, derive_seed, step_seed


def test_per_prompt_seeds_differ():
    params = per_prompt_params(SamplingParams(seed=7), 3)
    assert len({p.seed for p in params}) == 3 and params[0].temperature == 1.0
    assert per_prompt_params(SamplingParams(), 2)[0].seed is None


def test_step_seeds_are_distinct_per_step_and_stream_and_in_range():
    seeds = {step_seed(base, step, stream) for base in (0, 1, 2**31 - 2) for step in range(50) for stream in range(3)}
    assert len(seeds) == 3 * 50 * 3 and all(0 <= s < SEED_MODULUS for s in seeds)


def test_prompt_seeds_follow_the_documented_formula():
    # per-prompt seeds and step seeds come from the same derivation: (base * 1_000_003 + offset) mod 2^31 - 1
    assert [p.seed for p in per_prompt_params(SamplingParams(seed=7), 3)] == [derive_seed(7, i) for i in range(3)]
    assert derive_seed(7, 2) == (7 * 1_000_003 + 2) % (2**31 - 1)
    assert step_seed(3, 4, 1) == derive_seed(3, 4 * 7919 + 1)
