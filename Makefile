# Two commands set everything up: `make test` and `make demo` (see README).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
ARTIFACTS ?= artifacts
WEIGHTS ?= auto
IMAGE_SIZE ?= 64
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv test test-fast test-milvus test-docker lint format demo demo-cli notebooks record-course bench bench-smoke clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,notebooks]"
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two pytest workers (pytest-xdist): the integration tier waits on kernels, servers and subprocesses as much
# as it computes, so two processes finish it much sooner even on two cores. TEST_WORKERS=0 runs in one.
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)
test: venv lint
	$(BIN)/python -m pytest $(PARALLEL)

# The inner loop: no ResNet50, no data folder, no server, no notebook; fails past its 2-minute budget.
FAST_TIER := not integration and not slow and not browser and not notebooks and not hostile and not milvus_server and not docker
test-fast: venv
	$(BIN)/python -m pytest -m "$(FAST_TIER)" --max-seconds 120 $(PARALLEL)

# The backend conformance suite against a real Milvus server (PyPI's embedded standalone, started on
# 127.0.0.1 and stopped afterwards); SIMLIB_MILVUS_URI=http://host:19530 runs it against another server.
test-milvus: venv
	SIMLIB_TEST_MILVUS_SERVER=1 $(BIN)/python -m pytest tests/test_backends.py -m milvus_server

# The container image and compose file, built and run for real (docs/deploy.md): a private Docker daemon (root;
# Debian's docker.io, installed when missing), a debootstrap base image and the build cache kept under
# /tmp/simlib-docker between runs. About 5 minutes; figures in test-artifacts/docker_figures.json.
test-docker: venv
	SIMLIB_TEST_DOCKER=1 $(BIN)/python -m pytest tests/test_docker.py -m docker

# The CLI path: index the default gallery, then search it with one of its own images.
demo-cli: venv
	$(BIN)/simlib index --out $(ARTIFACTS)/index --weights $(WEIGHTS) --image-size $(IMAGE_SIZE)
	$(BIN)/simlib search "$$($(BIN)/python -c 'import json;print(json.loads(open("$(ARTIFACTS)/index/records.jsonl").readline())["path"])')" \
		--index $(ARTIFACTS)/index -k 5

# The Gradio app on http://127.0.0.1:7860; the first start indexes the default gallery into $(ARTIFACTS)/index.
# More options: make demo DEMO_ARGS="--share --auth user:password" (see docs/app.md).
demo: venv
	$(BIN)/python app_gradio.py --artifacts $(ARTIFACTS) $(DEMO_ARGS)

# Run the whole course top to bottom on the real data (executed copies in $(ARTIFACTS)/notebooks).
notebooks: venv
	mkdir -p $(ARTIFACTS)/notebooks
	for nb in notebooks/0*.ipynb; do \
		$(BIN)/papermill "$$nb" "$(ARTIFACTS)/notebooks/$$(basename $$nb)" --cwd notebooks \
			-p WEIGHTS $(WEIGHTS) -p IMAGE_SIZE $(IMAGE_SIZE) || exit 1; \
	done

# The course's full run recorded (papermill, WEIGHTS=none, 64 px, a fresh artifacts/record-course): run times and
# results in docs/results/course.json, and the README's course times, "What training gives" and docs/training.md's
# measured table rendered from it. Needs the product set (SIMLIB_DATA); minutes on an idle 2-core CPU (the README's
# course table). RECORD_ARGS="--runs 2" runs it a second time on fresh artifacts and records that run's time and
# which results, if any, differed from the first run's.
record-course: venv
	$(BIN)/python -m benchmarks.record_course $(RECORD_ARGS)

# Benchmarks at README scale (tens of minutes on 2 cores; results in benchmarks/results/, the table in
# benchmarks/results/report.md). `make bench-smoke` runs each script at toy size in seconds.
BENCHES := embed precision query index train
bench: venv
	$(BIN)/python -m benchmarks.bench_embed --save-embeddings
	$(BIN)/python -m benchmarks.bench_precision
	$(BIN)/python -m benchmarks.bench_query
	$(BIN)/python -m benchmarks.bench_index
	$(BIN)/python -m benchmarks.bench_train
	$(BIN)/python -m benchmarks.report

bench-smoke: venv
	for b in $(BENCHES); do $(BIN)/python -m benchmarks.bench_$$b --smoke || exit 1; done

clean:
	rm -rf $(ARTIFACTS) .pytest_cache .ruff_cache test-artifacts
