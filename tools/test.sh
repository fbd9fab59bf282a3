#!/usr/bin/env bash
# The full test suite. Installs the Debian packages the tests need when run as root (or with
# sudo available), then runs every test. Usage: tools/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="mosquitto openssl systemd dpkg-dev"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
# mosquitto's package starts a system broker on :1883; tests start their own on ephemeral ports.
cargo test --all-targets -- --test-threads=2
