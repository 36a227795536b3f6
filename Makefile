# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the release this project is tested with
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	# every extra (serve, ray, train, eval, privacy) and the test tools; the camera alone needs only `pip install .`
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/silhouette demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/detectors.py

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
