#!/bin/bash
# run.sh: the `make bench` driver.  Builds the helper programs, runs each
# benchmark in turn (each prints Markdown sections on stdout and may append
# summary rows to $OPTD_BENCH_SUMMARY, see benchlib.py), then prints the
# summary table of issue 5's targets.  Everything goes to stdout and, with a
# header naming the machine and the build, to tests/bench/results/latest.md
# (summary first, written whole at the end, so an interrupted run does not
# leave half a file behind).
#
#   BUILD=build tests/bench/run.sh          (the Makefile sets BUILD)
#
# To add a benchmark: a C one is built as $BUILD/bench/bench_NAME (the
# Makefile does that for every tests/bench/bench_*.c) and listed in BENCHES
# below; a Python one (tests/bench/bench_NAME.py, Debian's python3, run with
# BUILD in its environment) is listed in PY_BENCHES.  A missing benchmark is
# reported and skipped; a failing one makes the whole run fail after the
# others ran.
set -u -o pipefail
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
OUT_DIR=tests/bench/results
mkdir -p "$OUT_DIR" "$BUILD/bench"
TMP="$OUT_DIR/latest.md.tmp"
DETAILS="$OUT_DIR/details.md.tmp"
export OPTD_BENCH_SUMMARY="$OUT_DIR/summary.tsv.tmp"
: > "$DETAILS"
: > "$OPTD_BENCH_SUMMARY"
export BUILD
PY=/usr/bin/python3

BENCHES="bench_optim bench_threads"
PY_BENCHES="bench_http.py bench_sync.py bench_fleet.py bench_ui.py bench_list.py bench_durability.py bench_torch.py bench_tables.py bench_tables_disk.py bench_rounds.py"

# Helper programs the Python benchmarks drive (not benchmarks themselves, so
# outside the Makefile's bench_* rule): the minimal libmicrohttpd server and
# the open-loop load generator.  Same optimization level as the daemon.
CC=${CC:-cc}
HCFLAGS="-O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread"
build_helper() {
    local name=$1; shift
    if [ ! -x "$BUILD/bench/$name" ] || [ "tests/bench/$name.c" -nt "$BUILD/bench/$name" ]; then
        # shellcheck disable=SC2086,SC2046
        $CC $HCFLAGS -o "$BUILD/bench/$name" "tests/bench/$name.c" "$@" || return 1
    fi
}
status=0
build_helper mhd_floor $(pkg-config --cflags --libs libmicrohttpd) || status=1
build_helper loadgen || status=1

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
{
    echo "# optd benchmarks"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: ${cpu:-unknown CPU}, $(nproc) CPUs, $(uname -sr)"
    echo "- build: $BUILD (make bench: -O2, portable, no -march=native)"
    echo "- command: make bench"
    echo
} > "$TMP"
cat "$TMP"
start=$(date +%s)

for b in $BENCHES; do
    bin="$BUILD/bench/$b"
    if [ ! -x "$bin" ]; then
        echo "run.sh: $bin is missing, skipped" >&2
        status=1
        continue
    fi
    echo "run.sh: running $b" >&2
    if ! "$bin" > "$OUT_DIR/$b.md.tmp"; then
        echo "run.sh: $b failed" >&2
        status=1
    fi
    cat "$OUT_DIR/$b.md.tmp" | tee -a "$DETAILS"
    if [ "$b" = bench_optim ]; then
        $PY tests/bench/summary.py optim "$OUT_DIR/$b.md.tmp" "$OPTD_BENCH_SUMMARY" || status=1
    fi
    rm -f "$OUT_DIR/$b.md.tmp"
done

for b in $PY_BENCHES; do
    if [ ! -f "tests/bench/$b" ]; then
        echo "run.sh: tests/bench/$b is missing, skipped" >&2
        continue
    fi
    echo "run.sh: running $b" >&2
    if ! OPTD_BIN="$BUILD/optd" $PY "tests/bench/$b" > "$OUT_DIR/$b.md.tmp"; then
        echo "run.sh: $b failed" >&2
        status=1
    fi
    cat "$OUT_DIR/$b.md.tmp" | tee -a "$DETAILS"
    # bench_sync.py prints its own table; its target row is read from it.
    if [ "$b" = bench_sync.py ]; then
        $PY tests/bench/summary.py sync "$OUT_DIR/$b.md.tmp" "$OPTD_BENCH_SUMMARY" || status=1
    fi
    rm -f "$OUT_DIR/$b.md.tmp"
done

$PY tests/bench/summary.py table "$OPTD_BENCH_SUMMARY" > "$OUT_DIR/summary.md.tmp"
cat "$OUT_DIR/summary.md.tmp"
echo "Total time of the benchmarks: $(( $(date +%s) - start )) s."
{
    cat "$OUT_DIR/summary.md.tmp"
    echo "Total time of the benchmarks: $(( $(date +%s) - start )) s."
    echo
    cat "$DETAILS"
} >> "$TMP"
rm -f "$OUT_DIR/summary.md.tmp" "$DETAILS" "$OPTD_BENCH_SUMMARY"
mv "$TMP" "$OUT_DIR/latest.md"
echo "run.sh: wrote $OUT_DIR/latest.md" >&2
exit $status
