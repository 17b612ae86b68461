"""Sampler: log-probs of the sampling distribution against a direct per-row computation, exactness of
the draw, and reproducible random streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vortex_rl.rollout.sampler import SamplingTensors, apply_top_k_top_p, sample, sample_seed, uniform

VOCAB = 50


def reference_logprobs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """One row, written out step by step: scale, keep the top k, keep the smallest nucleus reaching top_p
    (sorted by probability, always at least one token), renormalise."""
    if temperature == 0:
        return torch.log_softmax(logits.double(), -1)
    scaled = logits.double() / temperature
    keep = set(range(len(scaled)))
    order = sorted(range(len(scaled)), key=lambda i: -scaled[i].item())
    if top_k > 0:
        keep = set(order[:top_k])
    kept = [i for i in order if i in keep]
    probs = torch.softmax(scaled[kept], -1)
    nucleus, mass = [], 0.0
    for i, p in zip(kept, probs.tolist()):
        nucleus.append(i)
        mass += p
        if mass >= top_p:
            break
    masked = torch.full_like(scaled, float("-inf"))
    masked[nucleus] = scaled[nucleus]
    return torch.log_softmax(masked, -1)


def tensors(rows, *, seeds=None, positions=None, top=0) -> SamplingTensors:
    n = len(rows)
    return SamplingTensors(
        temperatures=torch.tensor([r[0] for r in rows], dtype=torch.float32),
        top_k=torch.tensor([r[1] if r[1] > 0 and r[0] > 0 else VOCAB for r in rows]),
        top_p=torch.tensor([r[2] if r[0] > 0 else 1.0 for r in rows], dtype=torch.float32),
        uniforms=torch.from_numpy(uniform(seeds if seeds is not None else [sample_seed(7, i) for i in range(n)],
                                          positions if positions is not None else [11] * n)),
        filters=any(r[0] > 0 and (r[1] > 0 or r[2] < 1) for r in rows), num_top_logprobs=top)


ROWS = [(1.0, -1, 1.0), (0.7, 5, 1.0), (1.3, -1, 0.6), (0.5, 10, 0.8), (0.0, 3, 0.5), (2.0, 1, 1.0), (1.0, -1, 0.01)]


def test_logprobs_equal_direct_computation():
    torch.manual_seed(0)
    logits = torch.randn(len(ROWS), VOCAB) * 3
    out = sample(logits, tensors(ROWS, top=4))
    for i, (t, k, p) in enumerate(ROWS):
        ref = reference_logprobs(logits[i], t, k, p)
        token = out.tokens[i].item()
        assert ref[token] > float("-inf"), f"row {i} sampled a filtered token"
        torch.testing.assert_close(out.logprobs[i].double(), ref[token], atol=1e-5, rtol=0)
        ref_top = ref.topk(4)
        finite = ref_top.values > float("-inf")
        torch.testing.assert_close(out.top_logprobs[i][finite].double(), ref_top.values[finite], atol=1e-5, rtol=0)
        if t == 0:
            assert token == logits[i].argmax().item()


def test_filter_keeps_exactly_the_reference_support():
    torch.manual_seed(1)
    logits = torch.randn(len(ROWS), VOCAB)
    t = tensors(ROWS)
    filtered = apply_top_k_top_p(logits / torch.where(t.temperatures == 0, 1.0, t.temperatures)[:, None], t.top_k, t.top_p)
    for i, (temp, k, p) in enumerate(ROWS):
        expected = reference_logprobs(logits[i], temp, k, p) > float("-inf")
        assert torch.equal(filtered[i] > float("-inf"), expected if temp > 0 else torch.ones(VOCAB, dtype=torch.bool))


def test_draws_follow_the_distribution():
    """20,000 draws (distinct seeds) of a 6-token distribution with top_k=4: empirical frequencies match
    the renormalised probabilities within 0.015 (about 4 standard errors)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 3.0]])
    n = 20_000
    t = SamplingTensors(torch.full((n,), 0.8), torch.full((n,), 4), torch.ones(n),
                        torch.from_numpy(uniform([sample_seed(3, i) for i in range(n)], [5] * n)),
                        filters=True, num_top_logprobs=0)
    out = sample(logits.expand(n, -1), t)
    freq = torch.bincount(out.tokens, minlength=6).double() / n
    expected = reference_logprobs(logits[0], 0.8, 4, 1.0).exp()
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def reference_uniform(seed: int, position: int) -> float:
    """The draw's hash written out on Python ints, one row at a time."""
    def mix(x):
        for _ in range(2):
            x ^= x >> 16
            x = (x * 0x45D9F3B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    a = mix(seed ^ mix(position & 0xFFFFFFFF))
    b = mix(a ^ 0x5BD1E995)
    return (a + (b + 0.5) / 2.0**32) / 2.0**32


def test_uniforms_are_reproducible_and_spread():
    seeds = np.array([sample_seed(s, j) for s in range(50) for j in range(20)], dtype=np.int64)
    positions = np.arange(len(seeds)) % 37 + 2**33  # positions past 32 bits wrap like the reference
    u = uniform(seeds, positions)
    assert u.dtype == np.float64
    assert u.tolist() == [reference_uniform(int(s), int(p)) for s, p in zip(seeds, positions)]  # bit for bit
    assert ((u > 0) & (u < 1)).all()
    assert abs(u.mean() - 0.5) < 0.03 and abs(u.var() - 1 / 12) < 0.01
    assert len(set(u.tolist())) == len(u)
    assert sample_seed(1, 0) != sample_seed(1, 1) != sample_seed(2, 1)


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-2),
                                 dict(max_new_tokens=0), dict(stop=[-1]), dict(seed=-3), dict(logprobs=21),
                                 dict(logprobs=0), dict(temperature=float("nan"))])
def test_bad_sampling_params_raise_naming_the_value(bad):
    from vortex_rl.rollout import SamplingParams

    name, value = next(iter(bad.items()))
    with pytest.raises(ValueError, match=name):
        SamplingParams(**bad)


def test_sampling_tensors_rows_and_flags_follow_each_sequence():
    """The packed host copy against the parameters written out per row: greedy rows ignore top-k/top-p,
    top-k off is ``vocab``, each row's uniform is drawn at ``len(seq)``; the host flags pick the paths a
    batch needs, and a batch sampled with them draws what the always-safe path draws."""
    from vortex_rl.rollout import SamplingParams
    from vortex_rl.rollout.sampler import sampling_tensors
    from vortex_rl.rollout.sequence import Sequence

    kinds = [SamplingParams(temperature=0.7, top_k=5, top_p=0.9), SamplingParams(temperature=0.0, top_k=3, top_p=0.5),
             SamplingParams(temperature=1.3), SamplingParams(temperature=1.0, top_p=0.8, logprobs=3)]
    seqs = [Sequence(i, list(range(3 + 2 * i)), kinds[i % 4], seed=sample_seed(5, i), prompt_index=0,
                     sample_index=i, max_pages=4) for i in range(8)]
    t = sampling_tensors(seqs, VOCAB, torch.device("cpu"))
    for i, s in enumerate(seqs):
        p = s.params
        assert t.temperatures[i].item() == torch.tensor(p.temperature, dtype=torch.float32).item()
        assert t.top_k[i].item() == (p.top_k if p.top_k > 0 and p.temperature > 0 else VOCAB)
        assert t.top_p[i].item() == torch.tensor(p.top_p if p.temperature > 0 else 1.0, dtype=torch.float32).item()
        assert t.uniforms[i].item() == reference_uniform(s.seed, len(s))
    assert (t.filters, t.num_top_logprobs, t.any_greedy, t.all_greedy) == (True, 3, True, False)
    logits = torch.randn(len(seqs), VOCAB, generator=torch.Generator().manual_seed(2)) * 2
    for subset in ([0, 2, 3], [1, 5], list(range(8))):  # drawing only, greedy only, mixed
        part = sampling_tensors([seqs[i] for i in subset], VOCAB, torch.device("cpu"))
        assert part.any_greedy == any(i % 4 == 1 for i in subset)
        assert part.all_greedy == all(i % 4 == 1 for i in subset)
        safe = SamplingTensors(**{**part.__dict__, "any_greedy": True, "all_greedy": False})
        fast, slow = sample(logits[subset], part), sample(logits[subset], safe)
        assert torch.equal(fast.tokens, slow.tokens) and torch.equal(fast.logprobs, slow.logprobs)


def test_two_level_inversion_lands_where_the_full_cumulative_sum_puts_the_target():
    """Against the plain inversion (a float64 cumulative sum over the whole vocabulary of the same float32
    probabilities): the drawn token's interval holds the target, up to 1e-6 of the row's mass (the
    chunk masses are float32 sums). 2,500 tokens make three chunks, the last one padded; filtered rows
    leave most tokens at probability 0."""
    from vortex_rl.rollout.sampler import CDF_CHUNK, invert_cdf

    vocab, rows = 2500, 400
    assert -(-vocab // CDF_CHUNK) == 3
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(rows, vocab, generator=gen) * torch.linspace(0.5, 6, rows)[:, None]
    keep = torch.rand(rows, vocab, generator=gen) < torch.linspace(0.001, 1, rows)[:, None]
    keep[:, vocab - 1] |= torch.arange(rows) % 7 == 0  # some rows keep the padded chunk's last token
    logprobs = torch.log_softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)
    u = torch.from_numpy(uniform(range(rows), [9] * rows))
    u[:3] = torch.tensor([2.0**-60, 0.5, 1 - 2.0**-53], dtype=torch.float64)  # the extremes
    tokens = invert_cdf(logprobs, u)
    cdf = logprobs.exp().double().cumsum(dim=-1)
    target = u * cdf[:, -1]
    assert (logprobs.gather(-1, tokens[:, None])[:, 0] > float("-inf")).all()  # never a token without mass
    low = torch.where(tokens > 0, cdf.gather(-1, (tokens - 1).clamp(min=0)[:, None])[:, 0], 0.0)
    high = cdf.gather(-1, tokens[:, None])[:, 0]
    slack = 1e-6 * cdf[:, -1]
    assert ((low - slack <= target) & (target <= high + slack)).all()
    exact = torch.searchsorted(cdf, target[:, None], right=True)[:, 0]
    assert (tokens == exact).float().mean() > 0.95  # the same token but where a boundary is within the slack


def test_draws_over_several_chunks_follow_the_distribution():
    """20,000 draws from a distribution spread over the three chunks of a 2,500-token vocabulary:
    frequencies of the 8 tokens with mass within 0.015 of their probabilities."""
    vocab, n = 2500, 20_000
    logits = torch.full((1, vocab), float("-inf"))
    support = torch.tensor([0, 3, 1023, 1024, 1500, 2047, 2048, 2499])
    logits[0, support] = torch.tensor([1.0, 0.2, 2.0, -0.5, 1.5, 0.0, 0.7, 1.2])
    t = SamplingTensors(torch.ones(n), torch.full((n,), vocab), torch.ones(n),
                        torch.from_numpy(uniform([sample_seed(8, i) for i in range(n)], [3] * n)),
                        filters=False, num_top_logprobs=0, any_greedy=False)
    out = sample(logits.expand(n, -1), t)
    freq = torch.bincount(out.tokens, minlength=vocab).double() / n
    assert freq[support].sum().item() == 1.0
    torch.testing.assert_close(freq[support], torch.softmax(logits[0, support].double(), -1), atol=0.015, rtol=0)
