"""The decode kernels keep several K/V tiles in flight: checked by compiling them ahead of time for
sm_90 (``scripts/inspect_kernels.py``), so a regression fails without a GPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cuda_backend_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "needs triton"
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except Exception as e:  # noqa: BLE001 - any failure means no CUDA compiler here
        return f"triton's CUDA backend does not import here: {e}"
    try:
        if not Path(get_ptxas(90).path).exists():
            return "triton's CUDA backend has no ptxas here"
    except Exception as e:  # noqa: BLE001
        return f"triton's CUDA backend cannot find ptxas: {e}"
    return None


@pytest.mark.skipif(_cuda_backend_reason() is not None, reason=str(_cuda_backend_reason()))
def test_decode_kernels_hold_two_kv_buffers(tmp_path):
    out = tmp_path / "inspect.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "inspect_kernels.py"), "--only", "_paged_decode_kernel",
                          "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    kernels = {k["kernel"]: k for k in report["kernels"]}
    assert set(kernels) == {"_paged_decode_kernel[sparse]", "_paged_decode_kernel[dense]"}
    for name, k in kernels.items():
        assert k["main_buffers"] >= 2, f"{name}: {k['main_buffers']} K/V buffers at sm_90 ({k['buffers']})"
        assert k["in_loop_wait"] is None or k["in_loop_wait"] >= 1, f"{name}: waits for every copy in its loop"
        assert k["spills"] == 0, f"{name}: {k['spills']} bytes of register spills"
    assert report["paths"]["sparse"]["launches"] <= 3, report["paths"]["sparse"]


@pytest.mark.skipif(_cuda_backend_reason() is not None, reason=str(_cuda_backend_reason()))
def test_indexer_scores_pass_overlaps_centroid_loads(tmp_path):
    """Fused (batch 32) and chunked (batch 1) scores passes both keep centroid tiles in flight; at batch 1
    the indexer runs as scores over chunks + selection."""
    out = tmp_path / "inspect.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "inspect_kernels.py"), "--only",
                          "_block_sparse_indexer_kernel", "--out", str(out)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    kernels = {k["kernel"]: k for k in report["kernels"]}
    assert set(kernels) == {f"_block_sparse_indexer_kernel[{v}]" for v in ("fused", "scores", "select")}
    for name in ("_block_sparse_indexer_kernel[fused]", "_block_sparse_indexer_kernel[scores]"):
        k = kernels[name]
        assert k["main_buffers"] >= 2 and (k["in_loop_wait"] or 0) >= 1, (name, k["buffers"], k["in_loop_wait"])
        assert k["spills"] == 0, name
    assert report["paths"]["sparse_b1"]["triton"].count("_block_sparse_indexer_kernel") == 2
    assert report["paths"]["sparse"]["triton"].count("_block_sparse_indexer_kernel") == 1


@pytest.mark.skipif(_cuda_backend_reason() is not None, reason=str(_cuda_backend_reason()))
def test_decode_kernel_of_small_bf16_heads_does_not_spill():
    """gpu_check's GRPO phase decodes a head_dim-16 model in bf16 (the engine's dtype on CUDA). Sized for
    16 KiB of K per step, its blocks were 512 tokens and the kernel spilled (1184 bytes at sm_90 with
    triton 3.6, 5476 with 3.9); 16-bit blocks are capped at 128 tokens."""
    code = ("import json, sys; sys.path.insert(0, 'scripts'); import inspect_kernels as ik\n"
            "print(json.dumps({p: [ik.compile_launch(l)['spills'] for l in ik.layer_launches(p, ik.SMALL_HEADS)[0]\n"
            "                      if l.name == '_paged_decode_kernel'] for p in ('sparse', 'dense')}))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    spills = json.loads(run.stdout.strip().splitlines()[-1])
    assert spills == {"sparse": [0], "dense": [0]}, spills


HOPPER_SHARED_PER_BLOCK = 227 * 1024  # the most shared memory one program may take on sm_90


@pytest.mark.slow
@pytest.mark.skipif(_cuda_backend_reason() is not None, reason=str(_cuda_backend_reason()))
def test_every_tile_the_gpu_sweep_times_compiles_and_fits_an_sm(tmp_path):
    """``scripts/sweep_kernels.py`` times the decode kernel under ``TILES`` on a lent GPU; each must compile
    for sm_90 within one SM's shared memory, without spills, and more stages must mean more K/V buffers,
    so no device time goes to variants that cannot run or that do not pipeline."""
    out = tmp_path / "inspect.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "inspect_kernels.py"), "--only", "_paged_decode_kernel",
                          "--tiles", "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["tiles"]
    sys.path.insert(0, str(ROOT / "scripts"))
    import sweep_kernels

    assert len(rows) == 2 * len(sweep_kernels.TILES)
    for r in rows:
        assert r["error"] is None, r
        assert r["shared"] <= HOPPER_SHARED_PER_BLOCK and r["spills"] == 0, r
        stages = int(r["tile"].split("stages=")[1].split()[0])
        assert r["main_buffers"] == stages - 1, r
