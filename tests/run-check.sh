#!/bin/bash
# run-check.sh: what `make check` runs after installing the dependencies:
# the unit and integration tests in the normal build, again under
# ASan+UBSan, then the fuzz smoke run; stops at the first part that fails.
# Everything is shown as it runs and kept in build/check.log; the LAST line
# totals every test of every part as "check: N passed, N failed", so CI
# reads one count for the whole run (each part's own closing line stays in
# the log above it).
#
#   tests/run-check.sh        (MAKE may name the make to call)
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
MAKE=${MAKE:-make}
mkdir -p build
LOG=build/check.log
: > "$LOG"

status=0
for part in "all bench-bin unit integration" "SAN=1 all unit integration" "fuzz-smoke"; do
    # shellcheck disable=SC2086
    if ! $MAKE --no-print-directory $part 2>&1 | tee -a "$LOG"; then
        status=1
        echo "run-check.sh: 'make $part' failed" | tee -a "$LOG"
        break
    fi
done

# check's "100%: Checks: 73, Failures: 0, Errors: 0" per unit binary, and
# the "N passed, N failed" closing line of each integration and fuzz run.
read -r passed failed < <(awk '
    /^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+/ {
        gsub(/,/, ""); n = $3; f = $5 + $7; p += n - f; x += f; next
    }
    /^(fuzz: )?[0-9]+ passed, [0-9]+ failed/ {
        sub(/^fuzz: /, ""); p += $1; x += $3
    }
    END { print p + 0, x + 0 }' "$LOG")
# A part that failed before printing a count still counts as a failure.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
fi
echo "check: $passed passed, $failed failed"
exit "$status"
