# Two commands do all set-up on a fresh machine (Python 3.11, Debian):
#   make demo   - the main job end to end on local real components (emulators, Varnish)
#   make test   - every check: format, lint, the whole test suite (what .ci/run calls)
# Both create .venv/ from the pinned requirements.txt when it is missing or stale, and install
# Varnish + the xkey module from Debian when they are missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv system-deps bench clean

$(STAMP): requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	TF_USE_LEGACY_KERAS=1 $(PY) -c "import apache_beam, google.cloud.bigtable, tensorflow_recommenders, scann, onnxruntime, fastapi"
	@touch $@

venv: $(STAMP)

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

test: $(STAMP) system-deps lint
	$(PY) -m pytest

demo: $(STAMP) system-deps
	$(PY) -m cliffhanger.demo

# Benchmarks (not part of `make test`: they measure, they do not assert). Each writes out/<name>.json.
bench: $(STAMP) system-deps
	$(PY) -m benchmarks.streaming_features --out out/streaming_features.json
	$(PY) -m benchmarks.serving_latency --out out/serving_latency.json

clean:
	rm -rf var out .pytest_cache .ruff_cache
