#!/bin/bash
# run.sh: the `make bench` driver.  Runs each benchmark binary in turn; each
# prints a Markdown section (a heading and a table) on stdout.  Everything
# goes to stdout and, with a header naming the machine and the build, to
# tests/bench/results/latest.md (written whole at the end, so an interrupted
# run does not leave half a file behind).
#
#   BUILD=build tests/bench/run.sh          (the Makefile sets BUILD)
#
# To add a benchmark: build it as $BUILD/bench/bench_NAME (the Makefile does
# that for every tests/bench/bench_*.c) and list it in BENCHES below, in the
# order the report should show it.  A missing binary is reported and
# skipped; a failing one makes the whole run fail after the others ran.
set -u -o pipefail
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
OUT_DIR=tests/bench/results
mkdir -p "$OUT_DIR"
TMP="$OUT_DIR/latest.md.tmp"

BENCHES="bench_optim"

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
{
    echo "# optd benchmarks"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: ${cpu:-unknown CPU}, $(nproc) CPUs, $(uname -sr)"
    echo "- build: $BUILD (make bench: -O2, portable, no -march=native)"
    echo "- command: make bench"
    echo
} | tee "$TMP"

status=0
for b in $BENCHES; do
    bin="$BUILD/bench/$b"
    if [ ! -x "$bin" ]; then
        echo "run.sh: $bin is missing, skipped" >&2
        status=1
        continue
    fi
    echo "run.sh: running $b" >&2
    if ! "$bin" | tee -a "$TMP"; then
        echo "run.sh: $b failed" >&2
        status=1
    fi
done
mv "$TMP" "$OUT_DIR/latest.md"
echo "run.sh: wrote $OUT_DIR/latest.md" >&2
exit $status
