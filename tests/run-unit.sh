#!/bin/sh
# run-unit.sh BIN...: runs each check unit-test binary; fails if any fails.
# CK_FORK=no under sanitizers is not needed: check forks per test, and ASan
# reports in the child fail that test.
status=0
for bin in "$@"; do
    echo "== $bin"
    "$bin" || status=1
done
exit $status
