#!/bin/sh
# curl-adam.sh: the README's curl examples, runnable.  A full Adam loop that
# minimizes f(x) = sum(x^2) (gradient 2x) through optd, then one call of every
# endpoint.  tests/integration/test_curl_examples.py runs it against a real
# daemon, so the README's examples can never drift from the API.
#
#   OPTD_URL=http://127.0.0.1:8080 api/examples/curl-adam.sh
#   (OPTD_TOKEN=... adds "Authorization: Bearer ..." when auth is on)
set -eu
URL="${OPTD_URL:-http://127.0.0.1:8080}"
S="${OPTD_SESSION:-curl-demo}"
J="Content-Type: application/json"
AUTH="Authorization: Bearer ${OPTD_TOKEN:-none}"
c() { curl -fsS -H "$AUTH" "$@"; echo; }

# --- the Adam loop ------------------------------------------------------------
# Create an Adam session with three parameters.
c -X POST "$URL/v1/sessions" -H "$J" \
  -d '{"name": "'"$S"'", "optimizer": "adam", "hyperparameters": {"lr": 0.1},
       "params": [0.5, -1.25, 3.0]}'

# 100 steps: read the params, send the gradient 2x, with the step count the
# client believes the session is at (a retried request is then safe).
step=0
while [ "$step" -lt 100 ]; do
  params=$(curl -fsS -H "$AUTH" "$URL/v1/sessions/$S/params" | sed 's/.*"params": *\[\([^]]*\)\].*/\1/')
  grad=$(echo "$params" | awk -F, '{for (i = 1; i <= NF; i++) printf "%s%.17g", (i > 1 ? "," : ""), 2 * $i}')
  loss=$(echo "$params" | awk -F, '{s = 0; for (i = 1; i <= NF; i++) s += $i * $i; printf "%.17g", s}')
  curl -fsS -H "$AUTH" -X POST "$URL/v1/sessions/$S/step?return=none" -H "$J" \
    -d '{"gradient": ['"$grad"'], "step": '"$step"', "loss": '"$loss"'}' >/dev/null
  step=$((step + 1))
done
echo "after $step steps:"
c "$URL/v1/sessions/$S/params"

# --- one call of every endpoint -----------------------------------------------
c "$URL/healthz"
curl -fsS -H "$AUTH" "$URL/metrics" | grep '^optd_sessions '
c "$URL/v1/optimizers"
c "$URL/v1/sessions?limit=10&prefix=curl-"
c "$URL/v1/sessions/$S"
c "$URL/v1/sessions/$S/history?limit=3"
# Change the learning rate mid-run (moments are kept) and add a schedule.
c -X PATCH "$URL/v1/sessions/$S" -H "$J" \
  -d '{"hyperparameters": {"lr": 0.01}, "schedule": {"type": "exponential", "gamma": 0.99}}'
# One step with a binary body: little-endian float64 gradient, binary answer.
printf '\000\000\000\000\000\000\360\077\000\000\000\000\000\000\360\077\000\000\000\000\000\000\360\077' |
  curl -fsS -H "$AUTH" -X POST "$URL/v1/sessions/$S/step" -H "Content-Type: application/octet-stream" \
    -H "Accept: application/octet-stream" -H "Optd-Expect-Step: 100" --data-binary @- -D - -o /dev/null |
  grep -i '^optd-step'
# Binary params.
curl -fsS -H "$AUTH" "$URL/v1/sessions/$S/params" -H "Accept: application/octet-stream" | od -A d -t f8
# Fork: a copy with its optimizer state, at a named URL, with a new lr.
c -X PUT "$URL/v1/sessions/$S-fork" -H "$J" -d '{"from": "'"$S"'", "hyperparameters": {"lr": 0.001}}'
# Export the full state and import it under another name.
curl -fsS -H "$AUTH" "$URL/v1/sessions/$S/state" |
  curl -fsS -H "$AUTH" -X PUT "$URL/v1/sessions/$S-copy/state" -H "$J" --data-binary @-
echo
# A table (API.md 1.1, Tables): 4 rows of 2; a step touches only the rows it
# lists (row 3 twice: summed first), and rows are read back by number.
c -X PUT "$URL/v1/sessions/$S-table" -H "$J" \
  -d '{"optimizer": "sparse_adam", "size": 8, "row_size": 2, "hyperparameters": {"lr": 0.1}}'
c -X POST "$URL/v1/sessions/$S-table/step" -H "$J" -d '{"rows": [3, 0, 3], "gradient": [1, 2, 3, 4, 5, 6]}'
c "$URL/v1/sessions/$S-table/params?rows=0,3"
c -X POST "$URL/v1/sessions/$S-table/rows" -H "$J" -d '{"rows": [1, 3]}'
for name in "$S-table" "$S-copy" "$S-fork" "$S"; do
  curl -fsS -H "$AUTH" -X DELETE "$URL/v1/sessions/$name" -w "DELETE $name: %{http_code}\n"
done
echo done
