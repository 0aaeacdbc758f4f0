# Two entry points for a fresh machine: `make demo` and `make test`. Both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the dashboard's browser tests (Playwright drives it; it never downloads one).
browser:
	command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null \
		|| (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)

demo: $(STAMP)
	$(VENV)/bin/pdistill demo examples/mnist-demo.yaml

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

.PHONY: install browser demo test
