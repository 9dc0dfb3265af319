# Two entry points (see README.md): `make dev` and `make test`. Everything else is a step.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV_DIR ?= .gencluster/dev
EXAMPLE ?= examples/id-server.yaml
PYTEST_WORKERS ?= 2

.PHONY: dev test install system-packages images test-images lint typecheck unit

dev: install
	$(BIN)/gencluster dev up --dir $(DEV_DIR) --apply $(EXAMPLE)

# --dist loadfile: a module's tests run on one worker, in order, so a module-scoped control
# plane starts once, and scenario modules (helm install, then upgrade, then uninstall) keep
# their order instead of being split across workers.
test: install system-packages lint typecheck test-images
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=15 tests

# The pure tests alone (pytest -m unit: no sockets, no subprocesses, no control plane).
unit: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m unit tests

lint: install
	$(BIN)/ruff check .

# mypy over the pure core of each component (the file list is [tool.mypy] in pyproject.toml).
typecheck: install
	$(BIN)/mypy

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "gencluster needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Fault injection needs nftables, the container tests podman (with runc: crun refuses this
# kind of kernel) and debootstrap; install Debian's packages when we are root and one is missing.
SYSTEM_PACKAGES := nftables podman runc debootstrap uidmap
system-packages:
	@if [ "$$(id -u)" = 0 ] && ! (command -v nft && command -v podman && command -v runc && \
	    command -v debootstrap && command -v newuidmap) >/dev/null 2>&1; then \
	  (apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES) || \
	   (apt-get update && apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES))); \
	fi

# The runtime and operator images, on a base made with debootstrap (no registry needed).
images:
	.ci/images

# Before the tests: the images the container tests run, when we are root and podman works
# (otherwise those tests skip, saying why).
test-images:
	@if [ "$$(id -u)" = 0 ] && command -v podman >/dev/null 2>&1 && \
	    podman --runtime runc info >/dev/null 2>&1; then .ci/images; \
	else echo "images: not root or no working podman: the container tests will be skipped"; fi
