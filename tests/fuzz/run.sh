#!/bin/sh
# run.sh: runs the libFuzzer targets built by the Makefile.
#
#   tests/fuzz/run.sh smoke SECONDS BIN...   (make fuzz-smoke, part of check)
#   tests/fuzz/run.sh full SECONDS BIN...    (make fuzz)
#
# For each target fuzz_<t>: first every file of tests/fuzz/regressions/<t>/
# (inputs that once crashed) and of the seed corpus tests/fuzz/corpus/<t>/
# is run once; then the target fuzzes for a while, starting from the seeds
# plus what earlier runs found (kept in <build>/work/<t>/, never in the
# source tree).  smoke shares SECONDS among all targets; full gives each
# target SECONDS.  Any crash, leak, sanitizer report or timeout fails the
# run; the input that caused it is left in <build>/artifacts/<t>/ for
# minimizing (BIN -minimize_crash=1 -runs=10000 FILE) and committing under
# tests/fuzz/regressions/<t>/.
set -eu

mode=$1
secs=$2
shift 2
[ $# -gt 0 ] || { echo "run.sh: no fuzz targets given" >&2; exit 2; }
here=$(dirname "$0")

case "$mode" in
    smoke) per=$(( secs / $# )); [ "$per" -ge 1 ] || per=1 ;;
    full) per=$secs ;;
    *) echo "run.sh: mode is smoke or full" >&2; exit 2 ;;
esac

failed=0
passed=0
for bin in "$@"; do
    t=$(basename "$bin" | sed 's/^fuzz_//')
    build=$(dirname "$bin")
    seeds="$here/corpus/$t"
    regress="$here/regressions/$t"
    work="$build/work/$t"
    art="$build/artifacts/$t"
    log="$build/logs/$t.log"
    mkdir -p "$work" "$art" "$(dirname "$log")" "$seeds"
    dict=""
    [ -f "$here/$t.dict" ] && dict="-dict=$here/$t.dict"
    # Common options: a hang of 10 s is a finding; the targets never need
    # more than a few hundred MB.
    opts="-timeout=10 -rss_limit_mb=2048 -max_len=65536 -artifact_prefix=$art/ -print_final_stats=1"

    # 1. Replay the regressions and the seeds, each input once.
    dirs="$seeds"
    if [ -d "$regress" ] && [ -n "$(ls -A "$regress" 2>/dev/null)" ]; then
        dirs="$regress $seeds"
    fi
    # shellcheck disable=SC2086
    if ! "$bin" $opts -runs=0 $dirs >"$log" 2>&1; then
        echo "fuzz $t: FAILED replaying $dirs (see $log)"
        tail -n 40 "$log"
        failed=$((failed + 1))
        continue
    fi

    # 2. Fuzz.
    # shellcheck disable=SC2086
    if "$bin" $opts $dict -max_total_time="$per" "$work" "$seeds" >"$log.fuzz" 2>&1; then
        runs=$(grep -a '^stat::number_of_executed_units' "$log.fuzz" | tr -s ' ' | cut -d' ' -f2)
        rate=$(grep -a '^stat::average_exec_per_sec' "$log.fuzz" | tr -s ' ' | cut -d' ' -f2)
        cov=$(grep -aE '^#[0-9]+' "$log.fuzz" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' || true)
        echo "fuzz $t: ok (${per}s, $runs runs, $rate exec/s; $cov)"
        passed=$((passed + 1))
    else
        echo "fuzz $t: FAILED (see $log.fuzz; input in $art/)"
        grep -aE 'ERROR|SUMMARY|fuzz finding|runtime error|#[0-9]+ 0x' "$log.fuzz" | head -n 30
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
