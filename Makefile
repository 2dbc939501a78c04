# The README's two commands, `make demo` and `make test`, each do all set-up from a fresh clone: a local venv with the
# CPU torch wheel, clipzoo and its extras.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clipzoo-installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: install demo test test-slow quality style bench cards clean

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[train,video,diva,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(VENV)/bin/clipzoo demo

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -m "not slow" -q -p no:cacheprovider tests

test-slow: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -m slow -q -p no:cacheprovider tests

quality: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

style: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
