# Switchyard: the commands a developer and CI use.
CARGO ?= cargo

.PHONY: run test bench lint fmt build

## run: a local 5-node testnet on loopback that floods messages and prints a summary
run:
	$(CARGO) run --release -p switchyard-cli --bin switchyard -- testnet --nodes 5

## test: every test in the workspace (unit, property, integration, doc tests)
test:
	$(CARGO) test --workspace

## bench: criterion micro-benchmarks, then the end-to-end comparison against raw TCP
bench:
	$(CARGO) bench -p switchyard-proto
	$(CARGO) run --release -p switchyard-cli --bin switchyard -- bench

## lint: formatting check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## fmt: format the code
fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --all-targets
