#!/usr/bin/env bash
# On a machine with internet access: collect every wheel the appliance needs into one folder,
# to carry to the customer's offline server together with install.sh.
#   deploy/build-wheelhouse.sh [--extras gpu,kb] [--out wheelhouse]   (kb: the knowledge-base skill)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="gpu,kb"; out="wheelhouse"
while [ $# -gt 0 ]; do
  case "$1" in
    --extras) extras="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--extras gpu,kb|cpu,kb] [--out DIR]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
python3 -m pip wheel --wheel-dir "$out" ".[${extras}]"
python3 -m pip download --dest "$out" pip setuptools wheel
# Audit what is about to be carried to the customer (this machine reaches the vulnerability services).
python3 -m pip install --quiet pip-audit
ls "$out"/*.whl | sed -E 's#.*/([^/-]+)-([^-]+)-.*#\1==\2#' | grep -v '^onprem_assistant' > "$out/requirements-audit.txt"
python3 -m pip_audit --requirement "$out/requirements-audit.txt" --no-deps --disable-pip --progress-spinner off
echo "wheelhouse ready: $out ($(ls "$out" | wc -l) files); copy it and deploy/ to the server"
