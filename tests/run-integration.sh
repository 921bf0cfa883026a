#!/bin/sh
# run-integration.sh [ARGS]: runs the black-box integration tests against the
# daemon named by OPTD_BIN (default build/optd).  See tests/integration/run.py;
# the last line printed is "N passed, N failed[, N skipped]".
cd "$(dirname "$0")/.." || exit 1
: "${OPTD_BIN:=build/optd}"
export OPTD_BIN
if [ ! -x "$OPTD_BIN" ]; then
    echo "run-integration.sh: no daemon binary at $OPTD_BIN (build it first)"
    echo "0 passed, 1 failed"
    exit 1
fi
exec /usr/bin/python3 tests/integration/run.py "$@"
