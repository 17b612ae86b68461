"""``layers.linear.linear``: the engine's projections equal ``F.linear`` on every path (the CPU decode path
that puts the weight on the left for a few rows, a single row doubled, and the plain one), with the output
contiguous."""

import pytest
import torch
import torch.nn.functional as F

from vortex_rl.rollout.layers.embedding import LMHead
from vortex_rl.rollout.layers.linear import CPU_WEIGHT_LEFT_MAX_ROWS, QKVLinear, linear


@pytest.mark.parametrize("rows", [1, 2, 4, CPU_WEIGHT_LEFT_MAX_ROWS, CPU_WEIGHT_LEFT_MAX_ROWS + 1, 300])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_equals_f_linear(rows, with_bias):
    gen = torch.Generator().manual_seed(rows)
    x, weight = torch.randn(rows, 96, generator=gen), torch.randn(200, 96, generator=gen)
    bias = torch.randn(200, generator=gen) if with_bias else None
    out = linear(x, weight, bias)
    assert out.shape == (rows, 200) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)  # float32 rounding


def test_other_dtypes_and_batched_inputs_take_f_linear():
    x, weight = torch.randn(4, 32, dtype=torch.bfloat16), torch.randn(48, 32, dtype=torch.bfloat16)
    assert torch.equal(linear(x, weight), F.linear(x, weight))
    x3 = torch.randn(2, 3, 32)
    assert torch.equal(linear(x3, weight.float()), F.linear(x3, weight.float()))


def test_engine_layers_use_it_and_keep_their_shapes():
    """A packed q/k/v projection and the LM head (float32 logits) on a decode-sized batch."""
    torch.manual_seed(0)
    qkv = QKVLinear(64, num_heads=4, num_kv_heads=2, head_dim=16, bias=True)
    torch.nn.init.normal_(qkv.weight)
    torch.nn.init.normal_(qkv.bias)
    x = torch.randn(4, 64)
    torch.testing.assert_close(qkv(x), F.linear(x, qkv.weight, qkv.bias), atol=1e-5, rtol=1e-5)
    q, k, v = qkv(x).split([64, 32, 32], dim=-1)
    assert q.view(4, 4, 16).shape == (4, 4, 16)  # views of the split need a contiguous output
    head = LMHead(500, 64)
    torch.nn.init.normal_(head.weight)
    logits = head(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, F.linear(x, head.weight), atol=1e-5, rtol=1e-5)
