#!/usr/bin/env bash
# Install the non-Rust test tooling into the repository (idempotent, non-interactive):
#   .venv/              python3 venv with tests/py/requirements.txt (mcp, mcp-server-time, openai, ...)
#   tests/node/node_modules/   npm ci of tests/node/package-lock.json (@modelcontextprotocol/server-everything, playwright-core)
#   /usr/bin/chromium          Debian's chromium and chromium-driver (apt), for the approvals page test
# Each part is skipped when a stamp shows it is already installed from the same lock inputs.
# Network: PyPI (pip), the npm registry (npm) and Debian's archive (apt) only. Env: PYTHON (default python3), FORCE=1 to reinstall.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false npm_config_yes=true
PYTHON="${PYTHON:-python3}"
FORCE="${FORCE:-0}"

say() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
command -v node >/dev/null || die "node not found"
command -v npm >/dev/null || die "npm not found"
command -v sha256sum >/dev/null || die "sha256sum not found"

# ---------------------------------------------------------------- python venv
REQ="tests/py/requirements.txt"
VENV=".venv"
PY_STAMP="$VENV/.tollgate-deps.sha256"
[ -f "$REQ" ] || die "$REQ missing"
py_version="$("$PYTHON" -c 'import sys; print(sys.version)')"
py_want="$( { sha256sum "$REQ"; printf '%s\n' "$py_version"; } | sha256sum | cut -d' ' -f1)"
py_have="$(cat "$PY_STAMP" 2>/dev/null || true)"

if [ "$FORCE" != 1 ] && [ "$py_want" = "$py_have" ] \
    && "$VENV/bin/python" -c 'import mcp, mcp_server_time, openai, prometheus_client, schemathesis, openapi_spec_validator' 2>/dev/null; then
  say "python: $VENV up to date ($REQ unchanged), skipping"
else
  if [ -d "$VENV" ]; then
    say "python: $VENV is stale or incomplete, recreating it"
    rm -rf "$VENV"
  fi
  say "python: $PYTHON -m venv $VENV  (Python ${py_version%% *})"
  "$PYTHON" -m venv "$VENV"
  say "python: $VENV/bin/pip install -r $REQ"
  "$VENV/bin/pip" install --quiet -r "$REQ"
  "$VENV/bin/pip" check
  "$VENV/bin/python" -c 'import mcp, mcp_server_time, openai, prometheus_client, schemathesis, openapi_spec_validator' || die "python packages do not import"
  printf '%s\n' "$py_want" > "$PY_STAMP"
  say "python: installed"
fi

# ---------------------------------------------------------------- node packages
NODE_DIR="tests/node"
NODE_STAMP="$NODE_DIR/node_modules/.tollgate-deps.sha256"
ENTRY="$NODE_DIR/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
[ -f "$NODE_DIR/package-lock.json" ] || die "$NODE_DIR/package-lock.json missing"
node_want="$( { sha256sum "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)"
node_have="$(cat "$NODE_STAMP" 2>/dev/null || true)"

PLAYWRIGHT="$NODE_DIR/node_modules/playwright-core/package.json"
if [ "$FORCE" != 1 ] && [ "$node_want" = "$node_have" ] && [ -f "$ENTRY" ] && [ -f "$PLAYWRIGHT" ]; then
  say "node: $NODE_DIR/node_modules up to date (package-lock.json unchanged), skipping"
else
  say "node: npm ci --prefix $NODE_DIR  (node $(node --version), npm $(npm --version 2>/dev/null))"
  npm ci --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error </dev/null
  [ -f "$ENTRY" ] || die "npm ci finished but $ENTRY is missing"
  printf '%s\n' "$node_want" > "$NODE_STAMP"
  say "node: installed"
fi

# ---------------------------------------------------------------- chromium
# The approvals page is tested in a real headless browser (Debian's chromium,
# driven by playwright-core with executablePath /usr/bin/chromium).
if [ -x /usr/bin/chromium ]; then
  say "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present), skipping"
else
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  say "chromium: apt-get install chromium chromium-driver"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver </dev/null >/dev/null
  [ -x /usr/bin/chromium ] || die "chromium did not install"
  say "chromium: installed"
fi

say "ready: $VENV/bin/python tests/py/agent.py | $VENV/bin/mcp-server-time | node $ENTRY stdio | node $NODE_DIR/everything-http.mjs"
