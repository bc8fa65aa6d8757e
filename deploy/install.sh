#!/usr/bin/env bash
# Install or upgrade the appliance on a bare-metal server, offline, from a local wheelhouse.
#
#   sudo deploy/install.sh --wheelhouse /media/usb/wheelhouse [--extras gpu,kb]   install or upgrade
#   sudo deploy/install.sh --rollback                                           back to the previous release
#   sudo deploy/install.sh --dry-run ...                                        print what would be done
#   sudo deploy/install.sh --alertmanager ...   also Debian's prometheus-alertmanager, routed to the connector's
#                                               /alerts (deploy/monitoring/alertmanager.yml; needs an apt mirror)
#
# Layout: /opt/appliance/releases/<version>/venv (one per release), /opt/appliance/current -> the live
# release, /etc/appliance/{appliance.toml,appliance.env} (kept across upgrades), /var/lib/appliance
# (models, state), systemd units appliance-inference and appliance-connector, user "appliance".
set -euo pipefail

PREFIX=/opt/appliance
ETC=/etc/appliance
STATE=/var/lib/appliance
UNIT_DIR=/etc/systemd/system
USER_NAME=appliance
wheelhouse=""; extras="gpu,kb"; rollback=0; dry=0; alertmanager=0
HERE="$(cd "$(dirname "$0")" && pwd)"

while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) wheelhouse="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --rollback) rollback=1; shift ;;
    --dry-run) dry=1; shift ;;
    --alertmanager) alertmanager=1; shift ;;
    *) echo "usage: $0 --wheelhouse DIR [--extras gpu,kb|cpu,kb] [--prefix DIR] [--alertmanager] | --rollback  [--dry-run]" >&2; exit 2 ;;
  esac
done

run() { if [ "$dry" = 1 ]; then echo "+ $*"; else "$@"; fi; }
say() { echo "[install] $*"; }

if [ "$dry" = 0 ] && [ "$(id -u)" != 0 ]; then echo "run as root (sudo)" >&2; exit 1; fi

restart_services() {
  run systemctl daemon-reload
  run systemctl restart appliance-inference.service
  run systemctl restart appliance-connector.service
}

if [ "$rollback" = 1 ]; then
  current=$(readlink -f "$PREFIX/current" 2>/dev/null || true)
  previous=$(ls -1dt "$PREFIX"/releases/* 2>/dev/null | grep -vx "$current" | head -n 1 || true)
  [ -n "$previous" ] || { echo "no previous release to roll back to" >&2; exit 1; }
  say "rolling back: $current -> $previous"
  run ln -sfn "$previous" "$PREFIX/current.new"
  run mv -Tf "$PREFIX/current.new" "$PREFIX/current"
  restart_services
  say "done; check: systemctl status appliance-inference appliance-connector"
  exit 0
fi

[ -n "$wheelhouse" ] && [ -d "$wheelhouse" ] || { echo "--wheelhouse DIR is required (see build-wheelhouse.sh)" >&2; exit 2; }
[ -f "$HERE/constraints-gpu.txt" ] || { echo "$HERE/constraints-gpu.txt is missing: copy all of deploy/" >&2; exit 2; }
wheel=$(ls "$wheelhouse"/onprem_assistant-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$wheel" ] || { echo "no onprem_assistant wheel in $wheelhouse" >&2; exit 2; }
version=$(basename "$wheel" | cut -d- -f2)
release="$PREFIX/releases/$version-$(date +%Y%m%d%H%M%S)"

# vLLM's kernels come from Triton, which compiles a small C module at the first model load (on a T4 also
# for its attention backend): a C compiler and the Python headers must be on the server (see Dockerfile.gpu).
if [[ ",$extras," == *",gpu,"* ]]; then
  include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  if ! printf '#include <Python.h>\nint main(void) { return 0; }\n' \
       | "${CC:-gcc}" -fsyntax-only -I"$include" -x c - >/dev/null 2>&1; then
    msg="no C compiler or no Python headers ($include/Python.h): vLLM's Triton kernels cannot be built;"
    msg="$msg install them first: apt-get install gcc libc6-dev python3-dev"
    if [ "$dry" = 1 ]; then say "would stop: $msg"; else echo "$msg" >&2; exit 1; fi
  fi
fi

say "user and folders"
if ! id "$USER_NAME" >/dev/null 2>&1; then
  run useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin "$USER_NAME"
fi
run install -d -m 0755 "$PREFIX/releases"
run install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE" "$STATE/models"
run install -d -m 0750 -o root -g "$USER_NAME" "$ETC"

say "release $version in $release (offline, from $wheelhouse, versions from $HERE/constraints-gpu.txt)"
run python3 -m venv "$release/venv"
run "$release/venv/bin/pip" install --no-index --find-links "$wheelhouse" -c "$HERE/constraints-gpu.txt" --upgrade pip
run "$release/venv/bin/pip" install --no-index --find-links "$wheelhouse" -c "$HERE/constraints-gpu.txt" "$wheel[$extras]"
run cp "$HERE/../README.md" "$release/README.md" 2>/dev/null || true

say "configuration (kept if present)"
if [ ! -e "$ETC/appliance.toml" ]; then
  run install -m 0640 -o root -g "$USER_NAME" "$HERE/appliance.toml.example" "$ETC/appliance.toml"
fi
if [ ! -e "$ETC/appliance.env" ]; then
  run install -m 0640 -o root -g "$USER_NAME" /dev/null "$ETC/appliance.env"
  say "put CONNECTOR_CLIENT_SECRET, INFERENCE_JWT_SECRET (= CONNECTOR_MODEL_JWT_SECRET) and CONNECTOR_REDIS_URL in $ETC/appliance.env"
fi

if [ "$alertmanager" = 1 ]; then
  # Alertmanager -> the connector's POST /alerts -> the DingTalk ops group (README: Alerts in DingTalk). The bearer
  # token file must hold CONNECTOR_ALERTS_TOKEN of appliance.env. Debian's default config is replaced once (the
  # .appliance marker); later upgrades keep your edits.
  say "Alertmanager (Debian's prometheus-alertmanager)"
  run apt-get install -y prometheus-alertmanager
  if [ ! -e /etc/prometheus/alertmanager.yml.appliance ]; then
    run install -m 0644 "$HERE/monitoring/alertmanager.yml" /etc/prometheus/alertmanager.yml
    run touch /etc/prometheus/alertmanager.yml.appliance
  fi
  if [ ! -e /etc/prometheus/alerts-token ]; then
    run install -m 0640 -o root -g prometheus /dev/null /etc/prometheus/alerts-token
    say "put the value of CONNECTOR_ALERTS_TOKEN (in $ETC/appliance.env) in /etc/prometheus/alerts-token"
  fi
  run systemctl enable prometheus-alertmanager.service
  run systemctl restart prometheus-alertmanager.service
fi

say "systemd units"
run install -m 0644 "$HERE/systemd/appliance-inference.service" "$UNIT_DIR/"
run install -m 0644 "$HERE/systemd/appliance-connector.service" "$UNIT_DIR/"

say "switching $PREFIX/current to $release"
run ln -sfn "$release" "$PREFIX/current.new"
run mv -Tf "$PREFIX/current.new" "$PREFIX/current"
run systemctl daemon-reload
run systemctl enable appliance-inference.service appliance-connector.service
restart_services
say "done. Follow the logs: journalctl -u appliance-inference -u appliance-connector -f"
say "roll back with: sudo $0 --rollback"
