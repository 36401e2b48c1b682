# The newcomer's commands: `make demo` and `make test`. Each creates .venv when
# it is missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What the compiled build is tested with: everything that runs its modules.
COMPILED_TESTS := tests/core tests/health tests/http1 tests/proxy tests/transports tests/test_metrics.py

.PHONY: install demo test compiled lint docs bench services clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,fast,rich,websockets,dns,prometheus]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m clientlb demo

# Real etcd and dnsmasq for the discovery tests, Chromium for the status page's
# (Debian packages).
services:
	@sh scripts/install-services.sh etcd-server dnsmasq-base chromium gcc python3-dev

# The third run tests the mypyc-compiled build (`make compiled`) in place of the
# tree's sources: pytest, not python -m pytest, so that the tree is not first on
# sys.path.
test: $(STAMP) services
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/transports --library httpx2
	sh scripts/build-compiled.sh $(BIN)/python
	test ! -d build/compiled || CLIENTLB_EXPECT_COMPILED=1 PYTHONPATH=build/compiled \
		$(BIN)/pytest -q -p no:cacheprovider --import-mode=append $(COMPILED_TESTS)

# The compiled build in build/compiled (see scripts/build-compiled.sh).
compiled: $(STAMP)
	@sh scripts/install-services.sh gcc python3-dev
	sh scripts/build-compiled.sh $(BIN)/python

lint: $(STAMP)
	$(BIN)/ruff check clientlb tests benchmarks examples
	$(BIN)/mypy --strict clientlb

# docs/config.md is generated from the config schema (a test fails when stale).
docs: $(STAMP)
	$(BIN)/python scripts/gen_config_docs.py

# The proxy benchmark compares against peers installed here only (not dependencies);
# matplotlib draws the fleet simulator's figures; proxy.py measures the compiled
# build beside the sources.
bench: $(STAMP)
	@sh scripts/install-services.sh wrk nginx-light haproxy etcd-server dnsmasq-base gcc python3-dev
	$(BIN)/python -m pip install -q asgiproxy fastapi-proxy-lib matplotlib
	sh scripts/build-compiled.sh $(BIN)/python
	$(BIN)/python benchmarks/pick.py
	$(BIN)/python benchmarks/transport_overhead.py
	$(BIN)/python benchmarks/proxy.py
	$(BIN)/python benchmarks/proxy_memory.py
	$(BIN)/python benchmarks/chaos.py --peers
	$(BIN)/python benchmarks/failback.py
	$(BIN)/python benchmarks/tails.py
	$(BIN)/python benchmarks/large_pool.py
	$(BIN)/python benchmarks/discovery_latency.py
	$(BIN)/python benchmarks/hedging.py
	$(BIN)/python -m benchmarks.simulate

clean:
	rm -rf $(VENV) build dist *.egg-info
