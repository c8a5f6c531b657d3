# gpurun: build, install, test, lint and a demo run.
#
#   make demo    (as root) build gpurun and run a busybox container that prints its view
#   make test    unit and integration tests (the root-only ones skip without root)

CARGO ?= cargo
DESTDIR ?=
BINDIR ?= /usr/local/bin

# rustup puts cargo here; a fresh shell may not have it on PATH yet.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build install test lint demo deps clean

all: build

build:
	$(CARGO) build --release

install: build
	install -D -m 0755 target/release/gpurun $(DESTDIR)$(BINDIR)/gpurun

test: deps
	$(CARGO) test

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	for f in .ci/run scripts/*.sh; do bash -n "$$f" || exit 1; done

demo: deps
	$(MAKE) build
	GPURUN=target/release/gpurun scripts/demo.sh

# Packages from Debian that the tests and the demo need (installed only if missing).
deps:
	scripts/deps.sh

clean:
	rm -rf .bundles
	$(CARGO) clean

.PHONY: stress

# (as root) the fault, race and load tests with large counts; see scripts/stress.sh
stress: deps
	scripts/stress.sh
