#!/usr/bin/env bash
# Real V4L2 test: runs the statically linked veriframe inside a throw-away VM whose kernel provides
# the `vivid` virtual camera at /dev/video0 (../shared/v4l2-vm/run-in-vm.sh). Needs root the first
# time (apt-get of qemu-system-x86, busybox-static, kmod; Debian's kernel package).
# One VM boot runs tests/vm/steps.sh, which runs, separated by marker lines:
#   1. `veriframe probe`: must list vivid with its YUYV format and 640x480 size, its camera
#      fingerprint, and flag it as an injection instrument (virtual driver).
#   2. defaults (no allow_virtual): a bounded run must raise `injection_suspected`, and
#      `veriframe verify` must show nothing sealed as authentic (only the alert frame, as
#      evidence, verdict untrusted_source).
#   3. `allow_virtual = true`: a bounded `veriframe run --source /dev/video0` (YUYV 640x480) must
#      run as before: capture and analyse frames with contiguous sequence numbers (driver numbers
#      must not go backwards; gaps are printed), no camera-trust alert, frames sealed as
#      authentic-policy captures with the vivid fingerprint pinned on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
VM=../shared/v4l2-vm/run-in-vm.sh
test -x "$VM" || { echo "missing $VM"; exit 1; }
T=x86_64-unknown-linux-gnu
# VIVID_BIN: use an already built static binary instead of building one.
if [ -n "${VIVID_BIN:-}" ]; then BIN=$VIVID_BIN; else
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target $T --bin veriframe
  BIN=target/$T/release/veriframe
fi
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cp "$BIN" "$W/veriframe"
FRAMES=${VIVID_FRAMES:-40}   # frames of the allow_virtual run

common='
[log]
level = "info,veriframe::daemon=debug"
[source]
uri = "/dev/video0"
format = "yuyv"
width = 640
height = 480
fps = 25.0
[pipeline]
stats_interval = "1s"
# Under TCG emulation the detector takes ~1 s a frame: give the drain time to finish so the final
# line shows captured = analysed + dropped.
shutdown_timeout = "60s"
'
{ echo 'device_id = "vm-test"'; echo 'data_dir = "/tmp/vf"'; echo "$common" | sed 's/^fps = 25.0$/fps = 25.0\nallow_virtual = true/'
  # No model files in the VM: the default PAD pair is the one compiled into the binary.
  # vivid shows colour bars (no face): let the authentic policy seal no_face frames too, so the
  # run shows a trusted source's frames sealed under it, with its fingerprint.
  printf '[seal]\nverdicts = ["authentic", "unknown", "no_face"]\n'; } > "$W/vivid.toml"
# Defaults (no allow_virtual); no detector, so this run is quick: the camera guard alone decides.
{ echo 'device_id = "vm-test"'; echo 'data_dir = "/tmp/vf-default"'; echo "$common"
  printf '[detect]\nmodel = "none"\n'; } > "$W/defaults.toml"

"$VM" -f "$W/veriframe" -f "$W/vivid.toml" -f "$W/defaults.toml" tests/vm/steps.sh "$FRAMES" \
  | tee "$W/out.txt" || true
python3 tests/vm/check_vivid.py "$W/out.txt" "$FRAMES"
