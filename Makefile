# km: build, test, benchmark and install.
# CARGO_TARGET_DIR may point outside the tree to share builds between clones.

CARGO ?= cargo
PREFIX ?= /usr/local
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Names the binary answers to besides `km` (see `km --help`).
LINKS := k8sm-scheduler k8sm-executor k8sm-controller-manager k8sm-proxy km-apiserver \
         km-scheduler km-executor km-controller-manager km-proxy km-fit

.PHONY: all build release test test-deps lint fmt bench bench-e2e layout install uninstall deb local clean

all: build

build:
	$(CARGO) build --all-targets

release:
	$(CARGO) build --release

## test-deps: ZooKeeper and pymesos for the integration tests
test-deps:
	scripts/test-deps.sh

## test: every unit, integration and doc test (what CI runs)
test: test-deps
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## bench: placement, dev-master, apiserver, scheduler, executor, controller and proxy benchmarks (figures on stdout)
bench:
	$(CARGO) bench --bench matcher
	$(CARGO) bench --bench devmaster
	$(CARGO) bench --bench apiserver
	$(CARGO) bench --bench scheduler
	$(CARGO) bench --bench executor
	$(CARGO) bench --bench controller
	$(CARGO) bench --bench proxy

install: release
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(TARGET_DIR)/release/km $(DESTDIR)$(PREFIX)/bin/km
	for l in $(LINKS); do ln -sf km $(DESTDIR)$(PREFIX)/bin/$$l; done

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/km $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(LINKS))

## deb: the Debian package dist/km_VERSION_ARCH.deb (packaging/build-deb.sh)
deb: release
	packaging/build-deb.sh --binary $(TARGET_DIR)/release/km --out-dir dist

## local: build km, prepare the image km/busybox:1, run the whole system here (Ctrl-C stops it)
# LOCAL_PROFILE=release for an optimised build; LOCAL_ARGS for km local's flags.
LOCAL_PROFILE ?= dev
LOCAL_ARGS ?=
local:
	$(CARGO) build --bin km --profile $(LOCAL_PROFILE)
	scripts/busybox-image.sh km/busybox:1
	$(TARGET_DIR)/$(if $(filter dev,$(LOCAL_PROFILE)),debug,$(LOCAL_PROFILE))/km local $(LOCAL_ARGS)

## bench-e2e: the whole system's benchmarks on real Docker (km local start-up, a 100-pod burst, memory)
bench-e2e: test-deps
	$(CARGO) bench --bench e2e

## layout: profile a km local session and rewrite layout/hot-functions.txt.gz, the
## order scripts/km-link gives an optimised km's functions (scripts/layout.py)
LAYOUT_DIR := $(TARGET_DIR)/layout
layout: test-deps
	RUSTFLAGS="-C instrument-coverage -C symbol-mangling-version=v0" CARGO_PROFILE_RELEASE_LTO=off \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=1 $(CARGO) build --release --bin km \
	    --target x86_64-unknown-linux-gnu --target-dir $(LAYOUT_DIR)
	rm -rf $(LAYOUT_DIR)/profile
	scripts/layout.py run $(LAYOUT_DIR)/x86_64-unknown-linux-gnu/release/km $(LAYOUT_DIR)/profile
	scripts/layout.py write $(LAYOUT_DIR)/x86_64-unknown-linux-gnu/release/km $(LAYOUT_DIR)/profile layout/hot-functions.txt.gz

clean:
	$(CARGO) clean
