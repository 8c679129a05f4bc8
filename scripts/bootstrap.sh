#!/usr/bin/env bash
# Installs what finpass-pipeline needs on a fresh Debian machine: PostgreSQL 15 server binaries,
# Java 17+ and Maven (for the Kafka broker's jars), Go (the tests' independent audit-proof
# verifier, tests/verifier; an older Debian Go fetches the go.mod toolchain from the module
# proxy), and the project's virtualenv. Idempotent:
# a second run only checks. Run as root for the system packages (or install them yourself).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql-15)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v go >/dev/null || need+=(golang-go)
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing system packages: ${need[*]} (install them, e.g. sudo apt-get install -y ${need[*]})" >&2
    exit 2
  fi
  echo "bootstrap: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian's package starts its own cluster on 5432; ours is project-owned, so stop theirs.
  if command -v pg_ctlcluster >/dev/null; then
    for c in /etc/postgresql/*/main; do
      [ -d "$c" ] && pg_ctlcluster "$(basename "$(dirname "$c")")" main stop 2>/dev/null || true
    done
  fi
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: Python >= 3.11 required (found $("$PY" --version 2>&1))" >&2; exit 2; }
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: creating .venv and installing finpass-pipeline[dev]"
  [ -d .venv ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
