#!/usr/bin/env bash
# On a machine with internet access: collect every wheel the appliance needs into one folder,
# to carry to the customer's offline server together with install.sh.
#   deploy/build-wheelhouse.sh [--extras gpu,kb] [--out wheelhouse] [--w8a8]
# kb: the knowledge-base skill. --w8a8: also llm-compressor's own set (deploy/constraints-w8a8.txt), in
# OUT/w8a8, for scripts/quantize.py --method w8a8 in a separate environment.
# Every version comes from the lock, deploy/constraints-gpu.txt (deploy/lock-gpu.sh makes it), which is
# for Python 3.12 (Ubuntu 24.04, the server's): run it with that Python (PYTHON=python3.12 if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
extras="gpu,kb"; out="wheelhouse"; w8a8=0
while [ $# -gt 0 ]; do
  case "$1" in
    --extras) extras="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --w8a8) w8a8=1; shift ;;
    *) echo "usage: $0 [--extras gpu,kb|cpu,kb] [--out DIR] [--w8a8]" >&2; exit 2 ;;
  esac
done
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != 3.12 ]; then
  echo "$PY is Python $version; the lock and the server are Python 3.12: PYTHON=python3.12 $0 ..." >&2
  exit 2
fi
mkdir -p "$out"
"$PY" -m pip wheel --wheel-dir "$out" -c deploy/constraints-gpu.txt ".[${extras}]"
"$PY" -m pip download --dest "$out" -c deploy/constraints-gpu.txt pip setuptools wheel
if [ "$w8a8" = 1 ]; then
  "$PY" -m pip download --dest "$out/w8a8" --only-binary :all: -r deploy/constraints-w8a8.txt
fi
# Audit what is about to be carried to the customer (this machine reaches the vulnerability services),
# with pip-audit in a throw-away environment.
audit=$(mktemp -d)
trap 'rm -rf "$audit"' EXIT
"$PY" -m venv "$audit/venv"
"$audit/venv/bin/pip" install --quiet -c deploy/constraints-gpu.txt pip-audit
audit_dir() {  # DIR: every wheel in it but the project's, pinned as found
  ls "$1"/*.whl | sed -E 's#.*/([^/-]+)-([^-]+)-.*#\1==\2#' | grep -v '^onprem_assistant' > "$1/requirements-audit.txt"
  "$audit/venv/bin/python" -m pip_audit --requirement "$1/requirements-audit.txt" --no-deps --disable-pip \
    --progress-spinner off
}
audit_dir "$out"
if [ "$w8a8" = 1 ]; then audit_dir "$out/w8a8"; fi
echo "wheelhouse ready: $out ($(ls "$out" | wc -l) files); copy it and deploy/ to the server"
