#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: virtual environment, Python packages, the embedded model,
# and (with --test) a Redis server for the connector tests. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="cpu"
want_redis=0
for arg in "$@"; do
  case "$arg" in
    --test) extras="cpu,test"; want_redis=1 ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi

stamp="$VENV/.installed-$extras"
fingerprint=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$fingerprint" ]; then
  echo "[setup] installing the project with extras [$extras]"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
  echo "$fingerprint" > "$stamp"
fi

"$VENV/bin/python" scripts/fetch_default_model.py

if [ "$want_redis" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
  echo "[setup] installing redis-server"
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq redis-server >/dev/null 2>&1) || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null
  fi
fi
echo "[setup] done"
