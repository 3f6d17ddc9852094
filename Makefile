# The two commands a user needs: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision are pinned here only where this build machine serves them from disk;
# a plain `pip install -e .` elsewhere takes whatever torch>=2.4 the index offers.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out

.PHONY: venv install install-test demo test test-demo clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# facenet-pytorch (the `mtcnn` face detector, weights inside its wheel) is installed --no-deps: 2.6.0
# pins torch<2.3, torchvision<0.18, numpy<2 and Pillow<10.3, which pip would otherwise downgrade (or
# fail on); it runs with the torch above, and what it imports (requests, tqdm, Pillow) comes with
# ray, timm/optuna and matplotlib/torchvision
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q $(TORCH_PIN) || $(PIP) install -q torch torchvision
	$(PIP) install -q -e '.[tune]'
	$(PIP) install -q --no-deps facenet-pytorch==2.6.0
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test,tune]'
	touch $@

venv install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(VENV)/bin/interceptor demo --out $(DEMO_OUT)

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pylint --disable=all --enable=duplicate-code specialists data_pipeline ray_jobs benchmarks tests
	$(PY) -m pytest tests -q

# the whole demo under pytest, checking its 0.8 target (about 10 minutes on 2 CPUs; not in `make test`)
test-demo: $(VENV)/.installed-test
	INTERCEPTOR_DEMO_TEST=1 $(PY) -m pytest tests/ray_jobs/test_demo_target.py -q

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
