# gpurun: build, install, test, lint and a demo run.
#
#   make demo    (as root) build gpurun and run a busybox container that prints its view
#   make test    unit and integration tests (the root-only ones skip without root)

CARGO ?= cargo
DESTDIR ?=
BINDIR ?= /usr/local/bin

# rustup puts cargo here; a fresh shell may not have it on PATH yet.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build install test lint demo deps clean vm-test

all: build

# A static binary, as every cargo build here gives (.cargo/config.toml): every gpurun call
# that creates or enters a container executes it twice (the re-exec that protects the
# binary, CVE-2019-5736), and a static one starts faster. cargo puts it at
# target/<triple>/release/gpurun; it is copied to target/release/gpurun.
TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')

build:
	$(CARGO) build --release --bin gpurun
	install -D -m 0755 target/$(TRIPLE)/release/gpurun target/release/gpurun

install: build
	install -D -m 0755 target/release/gpurun $(DESTDIR)$(BINDIR)/gpurun

test:
	scripts/deps.sh test
	$(CARGO) test

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	for f in .ci/run scripts/*.sh; do bash -n "$$f" || exit 1; done

demo:
	scripts/deps.sh demo
	$(MAKE) build
	GPURUN=target/release/gpurun scripts/demo.sh

# Packages from Debian that everything here needs (installed only if missing; the groups
# are in scripts/deps.sh).
deps:
	scripts/deps.sh ci

clean:
	rm -rf .bundles
	$(CARGO) clean

# The cgroup v2 cases in a VM on Debian's kernel (QEMU, TCG): integration/vm/run.sh.
# Installs qemu-system-x86 and friends when missing (as root); caches the kernel in
# ~/.cache/gpurun-vm. Also run by `cargo test` when GPURUN_VM_TESTS=1.
vm-test:
	integration/vm/run.sh

.PHONY: bench

# (as root) gpurun beside runc and crun on one busybox bundle, interleaved: medians, CPU,
# peak RSS and ratios, also in target/bench/results.json. BENCH_ITERS=N and friends: see
# scripts/bench.sh and the README's "Speed".
bench:
	CARGO=$(CARGO) scripts/bench.sh

.PHONY: stress

# (as root) the fault, race and load tests with large counts; see scripts/stress.sh
stress:
	scripts/deps.sh test
	scripts/stress.sh
