#!/usr/bin/env bash
# Build release binaries for Raspberry Pi-class boards with Debian's rustc-web + cross gcc.
# Usage: cross/build.sh [aarch64|armv7|all]   (default aarch64)
# Prerequisites (root, one apt-get call so versions match; see cross/README.md):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install -y rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu \
#       libc6-dev-arm64-cross qemu-user-static
#   # armv7 also: rust-web-src gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
# Outputs: target/<triple>/release/veriframe and a stripped copy target/<triple>/release/veriframe.stripped
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-aarch64}"
# rustup's ~/.cargo/bin comes first on PATH and its toolchain has no ARM std here: use Debian's.
export RUSTC="${RUSTC:-/usr/bin/rustc}" RUSTDOC="${RUSTDOC:-/usr/bin/rustdoc}"
test -x "$RUSTC" || { echo "cross/build.sh: $RUSTC missing (apt-get install rustc-web)"; exit 2; }

build_aarch64() {
  local t=aarch64-unknown-linux-gnu
  cargo build --locked --release --target "$t" --bin veriframe
  aarch64-linux-gnu-strip -o "target/$t/release/veriframe.stripped" "target/$t/release/veriframe"
  ls -l "target/$t/release/veriframe.stripped"
}

build_armv7() {
  local t=armv7-unknown-linux-gnueabihf
  # No armhf std package is installable here: rebuild std from Debian's rust-web-src.
  # Do not add `-C target-feature=+neon` (candle's aarch64-only NEON code then fails to compile).
  RUSTC_BOOTSTRAP=1 cargo build --locked --release --target "$t" --bin veriframe \
    -Zbuild-std=std,panic_unwind
  arm-linux-gnueabihf-strip -o "target/$t/release/veriframe.stripped" "target/$t/release/veriframe"
  ls -l "target/$t/release/veriframe.stripped"
}

case "$which" in
  aarch64) build_aarch64 ;;
  armv7) build_armv7 ;;
  all) build_aarch64; build_armv7 ;;
  *) echo "usage: cross/build.sh [aarch64|armv7|all]"; exit 2 ;;
esac
