#!/usr/bin/env bash
# Drive the third-party MCP servers (and tests/py/fixture_server.py) with tests/py/agent.py in both
# --mode legacy and --mode auto, over stdio and Streamable HTTP, without tollgate. Prints a summary
# per run. Needs `bash .ci/install-deps.sh` first. Exit status is non-zero if a run could not connect
# or its plan did not produce the expected key results.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PY=.venv/bin/python
EV_STDIO=(node tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

# start_http VAR CMD...: start an HTTP server that prints "LISTENING <url>", store the URL in VAR.
start_http() {
  local var=$1; shift
  local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
  "$@" >"$fifo" 2>/dev/null &
  PIDS+=($!)
  local line=""
  exec 9<"$fifo"; rm -f "$fifo"
  while IFS= read -r -t 30 line <&9; do
    [[ $line == LISTENING\ * ]] && break
  done
  exec 9<&-   # the server never writes to stdout again, so closing our end is safe
  [[ $line == LISTENING\ * ]] || { echo "server did not report LISTENING: $*" >&2; exit 1; }
  printf -v "$var" '%s' "${line#LISTENING }"
  echo "# $* -> $line"
}

# check PLAN EXPECT_PROTOCOL PYTHON_ASSERTION -- AGENT ARGS...
check() {
  local plan=$1 want=$2 assertion=$3; shift 4
  printf '$ %s tests/py/agent.py' "$PY"; printf ' %q' "$@"; printf ' < %s\n' "$plan"
  local out; out=$("$PY" tests/py/agent.py "$@" <"$plan" 2>/dev/null) || true
  printf '%s' "$out" | "$PY" tests/py/summarize.py
  printf '%s' "$out" | "$PY" -c '
import json, sys
want, assertion = sys.argv[1], sys.argv[2]
d = json.load(sys.stdin); r = d["results"]
assert d["protocol"] == want, ("protocol", d["protocol"], "wanted", want)
assert eval(assertion), "assertion failed: " + assertion
' "$want" "$assertion" || { echo "FAILED: $*" >&2; exit 1; }
  echo
}

EV_OK="r[1]['content'][0]['text'] == 'Echo: hello' and r[4]['progress'][-1] == [4.0, 4.0] and r[7]['contents'] and r[13]['received'] and r[15]['isError'] is False"
TIME_OK="r[1]['structuredContent']['timezone'] == 'UTC' and r[4]['error']['code'] == -32602"
FX_OK="r[2]['progress'] == [[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]] and r[5]['received'] and r[6]['content'][0]['text'] == 'dyn1: x'"

for m in legacy auto; do
  check tests/py/plans/everything.json 2025-11-25 "$EV_OK" -- --mode "$m" --stdio -- "${EV_STDIO[@]}"
done

start_http EV_URL node tests/node/everything-http.mjs 0
for m in legacy auto; do
  check tests/py/plans/everything.json 2025-11-25 "$EV_OK" -- --http "$EV_URL" --header 'Authorization: Bearer test' --mode "$m"
done

check tests/py/plans/time.json 2025-11-25 "$TIME_OK" -- --mode legacy --stdio -- .venv/bin/mcp-server-time --local-timezone UTC
check tests/py/plans/time.json 2026-07-28 "$TIME_OK" -- --mode auto --stdio -- .venv/bin/mcp-server-time --local-timezone UTC

check tests/py/plans/fixture.json 2025-11-25 "$FX_OK" -- --mode legacy --stdio -- "$PY" tests/py/fixture_server.py
check tests/py/plans/fixture.json 2026-07-28 "$FX_OK" -- --mode auto --stdio -- "$PY" tests/py/fixture_server.py

start_http FX_URL "$PY" tests/py/fixture_server.py --http 0
check tests/py/plans/fixture.json 2025-11-25 "$FX_OK" -- --http "$FX_URL" --mode legacy
check tests/py/plans/fixture.json 2026-07-28 "$FX_OK" -- --http "$FX_URL" --mode auto

echo "smoke: 12 passed, 0 failed"
