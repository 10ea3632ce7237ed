# Every target sets up what it needs: a virtual environment in .venv with tipline installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The images, each a target of the one Dockerfile: the services', and the topics job's.
IMAGES := intake validation supplementation referral retraction console topics
TAG ?= dev

.PHONY: run up test lint bench docs images kafka clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tipline needs Python 3.11+"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

## run: the main job, the demo on the embedded stack (broker, Valkey and five services)
run: $(INSTALLED)
	$(BIN)/tipline demo

## up: start the whole system and keep it running until Ctrl-C
up: $(INSTALLED)
	$(BIN)/tipline up

## test: the whole test suite; "no tests ran" (pytest exit 5) counts as a failure
test: $(INSTALLED)
	@$(BIN)/python -m pytest -q -rs -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no tests ran"; exit 1; fi; exit $$rc

## kafka: Apache Kafka's jars (deploy/kafka/pom.xml) through Maven into ~/.cache/tipline, once (needs Java 17+ and Maven); `tipline up --kafka apache` and tests/apache use them
kafka: $(INSTALLED)
	$(BIN)/tipline kafka fetch

## lint: ruff and mypy
lint: $(INSTALLED)
	$(BIN)/ruff check shared services tipline tests
	$(BIN)/mypy shared services tipline tests

## bench: the raw aiokafka relay chain against the pipeline, each on a fresh embedded broker (a few minutes)
bench: $(INSTALLED)
	mkdir -p .tipline && $(BIN)/tipline bench --json .tipline/bench.json

## docs: regenerate the AsyncAPI and OpenAPI documents and the routing ConfigMap from the code
docs: $(INSTALLED)
	$(BIN)/tipline docs

## images: every service's image, tipline/<service>:$(TAG) (needs a Docker engine)
images:
	@for service in $(IMAGES); do \
	  echo "tipline/$$service:$(TAG)"; \
	  docker build --target $$service -t tipline/$$service:$(TAG) . || exit 1; \
	done

clean:
	rm -rf $(VENV) .tipline .pytest_cache .mypy_cache .ruff_cache
