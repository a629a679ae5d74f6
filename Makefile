# delayer: build everything with `make`, test with `make test`.
# Layout: lib/ -> $(BUILD)/libdelayer.a; tools/NAME.c -> $(BIN)/NAME;
# tests/unit/test_X.c -> $(BUILD)/tests/test_X.

VERSION   := 0.1.0
PREFIX    ?= /usr/local
BUILD     ?= build
BIN       ?= bin
CC        ?= cc
OPT       ?= -O2
CFLAGS    ?= $(OPT) -g
WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CPPFLAGS  += -std=c11 -D_GNU_SOURCE -DDELAYER_VERSION='"$(VERSION)"' -iquote lib
# -iquote: lib/sched.h must not shadow the system <sched.h>
LDLIBS    += -lcurl -lssl -lcrypto -lzmq -lmicrohttpd -lm
ifeq ($(SAN),1)
CFLAGS    += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS   += -fsanitize=address,undefined
endif

LIB_SRC   := $(wildcard lib/*.c)
LIB_OBJ   := $(LIB_SRC:lib/%.c=$(BUILD)/lib/%.o)
TOOL_SRC  := $(wildcard tools/*.c)
TOOLS     := $(TOOL_SRC:tools/%.c=$(BIN)/%)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNITS     := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
LIBA      := $(BUILD)/libdelayer.a

.PHONY: all setup test check sanitize demo run clean install bench bench-smoke fuzz fuzz-build fuzz-smoke soak
all: $(TOOLS) $(UNITS)

$(BUILD)/lib/%.o: lib/%.c $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -c -o $@ $<

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BIN)/%: tools/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/t.h $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

# Test helper tools (tests/tools/NAME.c -> $(BUILD)/tests/NAME), built with `all`.
TEST_TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tests/%,$(wildcard tests/tools/*.c))
all: $(TEST_TOOLS)

$(BUILD)/tests/%: tests/tools/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

# Installs system packages and pinned npm packages when missing (idempotent).
setup:
	@scripts/setup

# Every test: C unit tests and shunit2 suites; ends with "N passed, N failed".
# test_backpressure (about 3 minutes: 600 messages of 200 KB through a slowed
# DynamoDB) runs in `make soak` and alone (TESTS=test_backpressure tests/run),
# not here: with it, `.ci/run` (make test + make sanitize) reached its
# 40-minute budget on this 2-core machine.
TEST_EXCLUDE ?= backpressure
test: setup all
	@TESTS_EXCLUDE="$(TEST_EXCLUDE)" tests/run

check: test

# The same suites with AddressSanitizer + UndefinedBehaviorSanitizer, less
# those that run none of our C code under the sanitizers (shell, docs,
# deployment, valgrind, the fuzzers: already built with them) or that are
# long fault-injection runs whose C paths the other suites cover; they all
# run in `make test`. The end-to-end pipeline spreads 1,020 schedules over
# 20 s instead of 60 s here, to keep CI under 30 minutes. The backpressure
# suite measures resident memory, which ASan's shadow memory inflates.
SAN_EXCLUDE := chaos faults deploy main_job valgrind fuzz_smoke local_aws docs supervise backpressure pipeline
sanitize: setup
	$(MAKE) SAN=1 BUILD=build-san BIN=build-san/bin OPT=-O1 all
	@DELAYER_BIN=build-san/bin DELAYER_UNIT=build-san/tests PIPELINE_SPREAD=15 \
	  TESTS_EXCLUDE="$(SAN_EXCLUDE)" tests/run

# The long variants of the reliability suites (docs/reliability.md): crash
# chaos with 5,000 schedules over 3 minutes and 3 pause rounds, 2,000
# schedules through each server fault with a 30 s outage, a backlog of
# 2,000 messages of 200 KB through a slow DynamoDB. About 20 minutes.
# Override any number: make soak CHAOS_N=10000. The measured numbers are
# collected in $(SOAK_REPORT).
CHAOS_N       ?= 5000
CHAOS_SECONDS ?= 180
CHAOS_PAUSES  ?= 3
FAULTS_N      ?= 2000
FAULTS_OUTAGE ?= 30
BP_N          ?= 2000
SOAK_REPORT   ?= $(BUILD)/soak-report.txt
soak: setup all
	@mkdir -p $(dir $(SOAK_REPORT)); : >$(SOAK_REPORT); rc=0; \
	for s in test_chaos test_faults test_bad_input test_backpressure; do \
	  CHAOS_N=$(CHAOS_N) CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_PAUSES=$(CHAOS_PAUSES) \
	  FAULTS_N=$(FAULTS_N) FAULTS_OUTAGE=$(FAULTS_OUTAGE) BP_N=$(BP_N) CHAOS_REPORT=$(abspath $(SOAK_REPORT)) \
	  KEEP_LOGS=1 TESTS=$$s tests/run || rc=1; \
	done; echo "--- $(SOAK_REPORT):"; cat $(SOAK_REPORT); exit $$rc

# The main job: local stack, pipeline, demo schedules.
demo run: setup all
	@scripts/demo

# Bench helpers (bench/NAME.c -> $(BUILD)/bench/bench-NAME): load generator, report tap.
BENCH_TOOLS := $(patsubst bench/%.c,$(BUILD)/bench/bench-%,$(wildcard bench/*.c))

$(BUILD)/bench/bench-%: bench/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

# The benchmark (docs: README "Performance"): 15-20 min; BENCH_QUICK=1 for a
# shorter run; bench-smoke is a ~30 s run that only checks the bench works.
bench: setup all $(BENCH_TOOLS)
	@bench/run

bench-smoke: setup all $(BENCH_TOOLS)
	@BENCH_SMOKE=1 bench/run

# libFuzzer targets (tests/fuzz/fuzz_*.c) with clang, ASan and UBSan, in
# build-fuzz/. `make fuzz` runs each for FUZZ_SECONDS (default 60);
# `make fuzz-smoke` runs each for 5 s (CI). See docs/security.md.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_FLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_OBJ     := $(LIB_SRC:lib/%.c=$(FUZZ_BUILD)/lib/%.o)

$(FUZZ_BUILD)/lib/%.o: lib/%.c $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(WARN) -c -o $@ $<

$(FUZZ_BUILD)/libdelayer.a: $(FUZZ_OBJ)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libdelayer.a
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer $(WARN) -o $@ $< $(FUZZ_BUILD)/libdelayer.a $(LDLIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@tests/fuzz/run $(FUZZ_SECONDS)

fuzz-smoke: fuzz-build
	@tests/fuzz/run 5

# make install [PREFIX=/usr/local] [DESTDIR=]: the tools to PREFIX/bin; the
# supervisor to PREFIX/libexec/delayer/scripts/ with the neighbours it finds
# relative to itself (bin -> PREFIX/bin, pipelines -> PREFIX/share/delayer/
# pipelines), linked as PREFIX/bin/delayer-supervise; the man pages to
# PREFIX/share/man/man1; README.md and docs/*.md to PREFIX/share/doc/delayer.
# scripts/local-aws is a development tool (it runs the pinned servers in the
# clone's node_modules) and is not installed, nor is its man page.
install: $(TOOLS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/libexec/delayer/scripts $(DESTDIR)$(PREFIX)/share/delayer/pipelines \
	    $(DESTDIR)$(PREFIX)/share/doc/delayer/docs
	install -m 0755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 scripts/delayer-supervise $(DESTDIR)$(PREFIX)/libexec/delayer/scripts/
	install -m 0644 pipelines/*.conf $(DESTDIR)$(PREFIX)/share/delayer/pipelines/
	ln -sfn ../../bin $(DESTDIR)$(PREFIX)/libexec/delayer/bin
	ln -sfn ../../share/delayer/pipelines $(DESTDIR)$(PREFIX)/libexec/delayer/pipelines
	ln -sfn ../libexec/delayer/scripts/delayer-supervise $(DESTDIR)$(PREFIX)/bin/delayer-supervise
	install -m 0644 $(filter-out docs/local-aws.1,$(wildcard docs/*.1)) $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/delayer/
	install -m 0644 $(wildcard docs/*.md) $(DESTDIR)$(PREFIX)/share/doc/delayer/docs/

clean:
	rm -rf build build-san bin build-fuzz
