#!/usr/bin/env bash
# Regenerate vendor/v4l2-sys-mit/src/bindings/<arch>.rs: builds the upstream crate (crates.io
# v4l2-sys-mit 0.3.0, whose build script runs bindgen 0.65.1 on <linux/videodev2.h>) for each target
# in a scratch project and copies its OUT_DIR/v4l2_bindings.rs. Maintainers only: needs libclang
# (apt-get install libclang-dev) and, for the ARM targets, the cross headers
# (libc6-dev-arm64-cross, libc6-dev-armhf-cross; clang finds them through the cross gcc).
# The normal build never runs this: it uses the committed files and needs no libclang.
# Usage: tools/gen-v4l2-bindings.sh [x86_64|aarch64|arm ...]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
out=vendor/v4l2-sys-mit/src/bindings
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src"
cat >"$scratch/Cargo.toml" <<'TOML'
[package]
name = "v4l2-bindings-scratch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
v4l2-sys-mit = "=0.3.0"
[workspace]
TOML
: >"$scratch/src/lib.rs"
triple() {
  case "$1" in
    x86_64) echo x86_64-unknown-linux-gnu ;;
    aarch64) echo aarch64-unknown-linux-gnu ;;
    arm) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unknown arch $1 (x86_64|aarch64|arm)" >&2; exit 2 ;;
  esac
}
for arch in "${@:-x86_64 aarch64 arm}"; do
  for a in $arch; do
    t=$(triple "$a")
    # Only the build script (host code) has to run; compiling the library itself for an ARM
    # target may fail where that target's std is not installed, which is fine here.
    (cd "$scratch" && cargo build --quiet --target "$t" --target-dir "$scratch/target") || true
    f=$(ls "$scratch"/target/"$t"/debug/build/v4l2-sys-mit-*/out/v4l2_bindings.rs 2>/dev/null | head -1)
    test -n "$f" || { echo "no bindings generated for $t" >&2; exit 2; }
    cp "$f" "$out/$a.rs"
    echo "$out/$a.rs <- $t ($(wc -c <"$out/$a.rs") bytes)"
  done
done
