# Two commands do all set-up on a fresh machine (Python 3.11, Debian):
#   make demo   - the main job end to end on local real components (emulators, Varnish)
#   make test   - every check: format, lint, the whole test suite (what .ci/run calls)
# Both create .venv/ from the pinned requirements.txt when it is missing or stale, and install
# Varnish + the xkey module from Debian when they are missing. `make test` also creates .venv-flink/
# from flink/requirements.txt: PyFlink pins Beam 2.61 / protobuf 5 / numpy 2.1, which cannot share
# .venv (../shared/ENVIRONMENT.md), so the PyFlink job's tests (tests_flink/) run there.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FLINK_VENV := .venv-flink
FLINK_PY := $(FLINK_VENV)/bin/python
FLINK_STAMP := $(FLINK_VENV)/.installed

.PHONY: demo test lint venv flink-venv system-deps bench clean

$(STAMP): requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	TF_USE_LEGACY_KERAS=1 $(PY) -c "import apache_beam, google.cloud.bigtable, tensorflow_recommenders, scann, onnxruntime, fastapi, numba"
	@touch $@

venv: $(STAMP)

$(FLINK_STAMP): flink/requirements.txt
	@test -x $(FLINK_PY) || $(PYTHON) -m venv $(FLINK_VENV)
	$(FLINK_PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(FLINK_PY) -m pip install --quiet --disable-pip-version-check -r flink/requirements.txt
	$(FLINK_PY) -c "import pyflink.datastream, numpy"
	@touch $@

flink-venv: $(FLINK_STAMP)

# Varnish 7 + varnish-modules (xkey) from Debian; the gcloud emulators and Java come with the machine
# image (see ../shared/ENVIRONMENT.md) and cliffhanger.localstack explains what to install if not.
system-deps:
	@if ! command -v varnishd >/dev/null 2>&1 || ! ( ls /usr/lib/*/varnish/vmods/libvmod_xkey.so || ls /usr/lib/varnish/vmods/libvmod_xkey.so ) >/dev/null 2>&1; then \
		echo "installing varnish + varnish-modules (xkey) ..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq varnish varnish-modules >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The Flink venv's bin goes first on PATH: PyFlink's Python workers run the `python` found there
# (the job also sets python.executable to its own interpreter).
test: $(STAMP) $(FLINK_STAMP) system-deps lint
	$(PY) -m pytest
	PATH="$(CURDIR)/$(FLINK_VENV)/bin:$$PATH" $(FLINK_PY) -m pytest tests_flink -q

demo: $(STAMP) system-deps
	$(PY) -m cliffhanger.demo

# Benchmarks (not part of `make test`: they measure, they do not assert). Each writes out/<name>.json.
bench: $(STAMP) system-deps
	$(PY) -m benchmarks.streaming_features --out out/streaming_features.json
	$(PY) -m benchmarks.serving_latency --out out/serving_latency.json

clean:
	rm -rf var out .pytest_cache .ruff_cache
