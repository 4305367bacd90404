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

.PHONY: demo test test-fast test-vllm bench bench-quality recipes clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || { bash scripts/need_disk.sh 8 $(VENV) "$(VENV) (6.9 GB: LlamaFactory, CUDA torch)" "make VENV=/other/disk/venv $(MAKECMDGOALS)" \
			&& $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[llamafactory,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/semievol-lf run recipes/run_demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not vllm and not gpu"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not vllm and not gpu"

# The vLLM lane (~8.5 min on 2 CPU cores, plus ~2-4 min to build .venv-vllm the first time): the vllm
# backend in-process, `vllm serve` + the openai backend, hf/vllm/openai agreement and timings, and
# the demo task pseudo-labeled and evaluated end to end in .venv-vllm (no LlamaFactory) and over a server.
test-vllm: $(STAMP)
	bash scripts/make_vllm_env.sh
	SEMIEVOL_BENCH_OUT=runs/bench-backends SEMIEVOL_MAIN_PYTHON=$(abspath $(BIN))/python \
		$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/vllm_lane
	cat runs/bench-backends/backends.txt runs/bench-backends/demo_pseudolabel.txt

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

bench-quality: $(STAMP)
	$(BIN)/python bench/quality.py

recipes: $(STAMP)
	$(BIN)/python -m semievol_lf.recipes

clean:
	rm -rf runs saves data .cache/tiny-llama
