#!/usr/bin/env bash
# The full test suite. Installs the Debian packages the tests need when run as root (or with
# sudo available), then runs every test. Usage: tools/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="mosquitto openssl systemd dpkg-dev python3 python3-venv"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
# mosquitto's package starts a system broker on :1883; tests start their own on ephemeral ports.
# The independent C2PA reader for tests/c2pa_interop.rs, c2pa-python from PyPI
# in a venv (the test fails, not skips, without it).
C2PA_VENV="$PWD/target/c2pa-venv"
if ! "$C2PA_VENV/bin/python" -c "import c2pa" 2>/dev/null; then
  python3 -m venv "$C2PA_VENV"
  "$C2PA_VENV/bin/pip" install -q c2pa-python==0.38.1
fi
export VERIFRAME_C2PA_PYTHON="$C2PA_VENV/bin/python"
# The PAD calibration tool's packages (tools/train/requirements.txt: numpy, OpenCV, ONNX Runtime,
# safetensors; no PyTorch) for tests/padcal.rs, which fails, not skips, without them.
PADCAL_VENV="$PWD/target/padcal-venv"
if ! "$PADCAL_VENV/bin/python" -c "import numpy, cv2, onnx, onnxruntime, safetensors" 2>/dev/null; then
  python3 -m venv "$PADCAL_VENV"
  "$PADCAL_VENV/bin/pip" install -q -r tools/train/requirements.txt
fi
export VERIFRAME_PADCAL_PYTHON="$PADCAL_VENV/bin/python"
cargo test --all-targets -- --test-threads=2
