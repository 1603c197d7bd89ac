# Switchyard: the commands a developer and CI use.
CARGO ?= cargo

.PHONY: run test bench lint fmt build fuzz

# Seconds each fuzz target runs in `make fuzz`.
FUZZ_TIME ?= 60
FUZZ_TARGETS := packet control peer_core secure

## run: a discovery testnet on loopback (a seed, 8 nodes that find each other through PEX), then a message flood and a summary
run:
	$(CARGO) run --release -p switchyard-cli --bin switchyard -- testnet --discovery --nodes 8

## test: every test in the workspace (unit, property, integration, doc tests)
test:
	$(CARGO) test --workspace

## bench: criterion micro-benchmarks, then the end-to-end comparison against raw TCP
bench:
	$(CARGO) bench -p switchyard-proto
	$(CARGO) run --release -p switchyard-cli --bin switchyard -- bench

## lint: formatting check, clippy and rustdoc (broken links included) with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --exclude switchyard-cli

## fuzz: each cargo-fuzz target for FUZZ_TIME seconds (installs cargo-fuzz if missing).
## cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
## New corpus entries land in fuzz/corpus/<target>; a crash lands in fuzz/artifacts and
## belongs in fuzz/regressions/<target> once fixed (make test replays both).
fuzz:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t corpus/$$t -- \
			-max_total_time=$(FUZZ_TIME) -max_len=4096 || exit 1; \
	done

## fmt: format the code
fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --all-targets
