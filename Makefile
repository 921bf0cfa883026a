# optd: one plain Makefile.  Objects go under $(BUILD) (out of tree).
#
#   make            install missing build packages, build build/optd and build/liboptd.a
#   make run        install missing build and run packages, build, serve on 127.0.0.1:8080
#   make check      install the test packages too, build, run every test (also under ASan+UBSan)
#   make bench      install, build, run the benchmarks
#   make fuzz       libFuzzer targets, each for FUZZ_SECONDS (tests/fuzz)
#   make ftoa-exhaustive  check the float32 printer on all 2^32 floats (~18 min)
#   make SAN=1      build with AddressSanitizer + UndefinedBehaviorSanitizer
#
# BUILD=dir puts a build elsewhere, so several builds can coexist.

SAN ?= 0
ifeq ($(SAN),1)
BUILD ?= build/san
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT ?= -O1
else
BUILD ?= build
SANFLAGS =
OPT ?= -O2
endif

CC ?= cc
CXX ?= c++
PKGS = libmicrohttpd jansson libuv zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# -fno-math-errno: sqrt must not set errno, or the update loops cannot be
# vectorized.  No -ffast-math: the results must match PyTorch's arithmetic.
CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fno-math-errno -pthread \
          -Iinclude -Idaemon $(PKG_CFLAGS) $(SANFLAGS)
LDFLAGS += -pthread $(SANFLAGS)
LDLIBS += $(PKG_LIBS) -lstdc++ -lm

# C++ only where the library is C++: daemon/http/numparse.cc wraps
# std::from_chars behind a C function.  No exceptions cross into C.
CXXFLAGS ?= $(OPT) -g
CXXFLAGS += -std=c++17 -fno-exceptions -fno-rtti -Wall -Wextra -Werror -pthread -Idaemon $(SANFLAGS)

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
CFLAGS += -DOPTD_VERSION='"$(VERSION)"'
# The files that print it are rebuilt when VERSION changes (the flag alone
# is no prerequisite: a bump kept the old string in their objects).
$(BUILD)/daemon/config.o $(BUILD)/daemon/metrics.o $(BUILD)/daemon/main.o: VERSION

# The optimizer core: pure, no I/O (liboptd.a, usable in-process).
CORE_SRC := daemon/error.c $(wildcard daemon/optim/*.c)
# The daemon: everything else under daemon/ except main.c.
DAEMON_SRC := $(filter-out daemon/main.c daemon/error.c,$(wildcard daemon/*.c daemon/http/*.c))
DAEMON_CXX_SRC := $(wildcard daemon/http/*.cc)

CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/%.o) $(DAEMON_CXX_SRC:%.cc=$(BUILD)/%.o)
# The page /ui/: its own files (daemon/ui/) become a C table under
# $(BUILD)/gen, compiled into the daemon, so the binary alone serves them.
UI_FILES := $(sort $(wildcard daemon/ui/*.html daemon/ui/*.css daemon/ui/*.js daemon/ui/*.svg))
UI_GEN := $(BUILD)/gen/ui_assets.c
DAEMON_OBJ += $(BUILD)/gen/ui_assets.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

.PHONY: all binaries bench-bin deps deps-build run check unit integration san-check bench fixtures figures image-test clean help \
        fuzz fuzz-smoke fuzz-build fuzz-seeds ftoa-exhaustive
.DEFAULT_GOAL := all

# A plain `make` on a fresh machine installs what building needs first (or,
# without root, says in one line which command does); the compiler flags
# come from pkg-config, so the build itself runs in a second make.
all: deps-build
	@$(MAKE) --no-print-directory binaries

binaries: $(BUILD)/optd $(BUILD)/liboptd.a

help:
	@sed -n '3,11p' Makefile

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MMD -MP -c $< -o $@

$(UI_GEN): $(UI_FILES) daemon/ui/embed.sh
	@mkdir -p $(dir $@)
	sh daemon/ui/embed.sh $(UI_FILES) > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/ui_assets.o: $(UI_GEN) daemon/http/ui_assets.h
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/liboptd.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/libdaemon.a: $(DAEMON_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/optd: $(BUILD)/daemon/main.o $(BUILD)/libdaemon.a $(BUILD)/liboptd.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests (check): one binary per tests/unit/test_*.c.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libdaemon.a $(BUILD)/liboptd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) $(shell pkg-config --libs check 2>/dev/null)

# LD_PRELOAD fault-injection shim (failing write/fsync) for the persistence
# tests; built without sanitizers so it can be preloaded into any build.
$(BUILD)/faults/failio.so: tests/faults/failio.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=gnu11 -Wall -Wextra -Werror -fPIC -shared -o $@ $< -ldl
$(BUILD)/tests/test_persist: | $(BUILD)/faults/failio.so

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libdaemon.a $(BUILD)/liboptd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

deps-build:
	@deploy/install-deps.sh build

deps:
	@deploy/install-deps.sh build test

# Running needs the build packages only; the test tools come with `make check`.
run: deps-build
	@$(MAKE) --no-print-directory binaries
	$(BUILD)/optd --listen 127.0.0.1:8080 $(ARGS)

unit: $(UNIT_BIN)
	@tests/run-unit.sh $(UNIT_BIN)

integration: $(BUILD)/optd
	@OPTD_BIN=$(BUILD)/optd tests/run-integration.sh

# ftoa-exhaustive: the float32 printer against snprintf for all 2^32 floats
# (~18 min on 2 cores; not part of check, which runs a stride of it).
ftoa-exhaustive: $(BUILD)/libdaemon.a
	$(CC) $(CFLAGS) -o $(BUILD)/ftoa_exhaustive tests/unit/ftoa_exhaustive.c $(BUILD)/libdaemon.a $(LDLIBS)
	$(BUILD)/ftoa_exhaustive

# check: everything, in the normal build and again under ASan+UBSan, then
# the fuzz smoke run; tests/run-check.sh ends with the total of all tests.
check: deps
	@MAKE="$(MAKE)" tests/run-check.sh

# The benchmarks' C programs, built by check too so an interface change
# that breaks them is caught before `make bench` runs.
bench-bin: $(BENCH_BIN)

bench: deps
	@deploy/install-deps.sh bench
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@BUILD=$(BUILD) tests/bench/run.sh

# figures: the optimizer-path pictures and the page's screenshot in
# docs/figures (each script starts its own daemon).
figures: $(BUILD)/optd
	@deploy/install-deps.sh test
	OPTD_BIN=$(BUILD)/optd /usr/bin/python3 examples/figures.py --out docs/figures
	OPTD_BIN=$(BUILD)/optd /usr/bin/python3 examples/ui_screenshot.py --out docs/figures/ui.png

# image-test: deploy/Dockerfile's steps in a debootstrapped Debian 12 root
# (no Docker engine needed); slow, so not part of check.
image-test:
	@deploy/install-deps.sh image
	deploy/image-test.sh

fixtures:
	@deploy/install-deps.sh fixtures
	/usr/bin/python3 tests/fixtures/generate.py
	/usr/bin/python3 tests/fixtures/generate_rows.py

# ---- fuzzing: libFuzzer (clang, Debian's libclang-rt-14-dev) ---------------
# The daemon's sources are compiled again with clang under coverage
# instrumentation and ASan+UBSan into $(FUZZ_BUILD); each tests/fuzz/fuzz_*.c
# is one target linked with -fsanitize=fuzzer.  tests/fuzz/run.sh runs them:
#   make fuzz          each target for FUZZ_SECONDS (default 60) on its corpus
#   make fuzz-smoke    (part of check) replays every seed and regression file,
#                      then fuzzes about FUZZ_SMOKE_SECONDS (30) in all
#   make fuzz-seeds    regenerates the committed seed corpora
FUZZ_CC ?= clang
FUZZ_CXX ?= clang++
FUZZ_BUILD := $(BUILD)/fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 30
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fno-math-errno -pthread \
               -Iinclude -Idaemon $(PKG_CFLAGS) -DOPTD_VERSION='"$(VERSION)"' $(FUZZ_SAN)
FUZZ_CXXFLAGS := -O1 -g -std=c++17 -fno-exceptions -fno-rtti -Wall -Wextra -Werror -pthread -Idaemon $(FUZZ_SAN)
FUZZ_LIB_OBJ := $(CORE_SRC:%.c=$(FUZZ_BUILD)/%.o) $(DAEMON_SRC:%.c=$(FUZZ_BUILD)/%.o) \
                $(DAEMON_CXX_SRC:%.cc=$(FUZZ_BUILD)/%.o) \
                $(FUZZ_BUILD)/tests/fuzz/harness.o $(FUZZ_BUILD)/gen/ui_assets.o
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/gen/ui_assets.o: $(UI_GEN) daemon/http/ui_assets.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/libfuzzoptd.a: $(FUZZ_LIB_OBJ)
	$(AR) rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libfuzzoptd.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $@ $^ $(PKG_LIBS) -lstdc++ -lm

# The seed generator uses the real encoders, built without instrumentation.
$(BUILD)/fuzz-seeds/gen_seeds: tests/fuzz/gen_seeds.c tests/fuzz/harness.c $(BUILD)/libdaemon.a $(BUILD)/liboptd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/fuzz -o $@ $^ $(LDFLAGS) $(LDLIBS)

fuzz-build:
	@deploy/install-deps.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZ_BIN)

fuzz: fuzz-build
	@tests/fuzz/run.sh full $(FUZZ_SECONDS) $(FUZZ_BIN)

fuzz-smoke: fuzz-build
	@tests/fuzz/run.sh smoke $(FUZZ_SMOKE_SECONDS) $(FUZZ_BIN)

fuzz-seeds: $(BUILD)/fuzz-seeds/gen_seeds
	$(BUILD)/fuzz-seeds/gen_seeds tests/fuzz/corpus

clean:
	rm -rf build

-include $(CORE_OBJ:.o=.d) $(DAEMON_OBJ:.o=.d) $(BUILD)/daemon/main.d $(FUZZ_LIB_OBJ:.o=.d)
