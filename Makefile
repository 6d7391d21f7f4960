# `make serve` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.herd-installed

.PHONY: install serve test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

serve: install
	$(VENV)/bin/herd serve

test: install
	$(VENV)/bin/python -m pytest -q tests

bench: install
	$(VENV)/bin/python bench/throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
