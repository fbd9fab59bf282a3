#!/usr/bin/env bash
# Run the library's unit tests for aarch64 under qemu-user as a Raspberry Pi 4 core (Cortex-A72).
# qemu's default CPU (`max`) has ARMv8.2+ instructions a Pi 4 lacks (e.g. `sdot`), which would hide
# SIGILLs; QEMU_CPU=cortex-a72 makes such code fail here as it would on the board.
# Debug build (the `[profile.dev.package.gemm-f16] opt-level = 1` in Cargo.toml is required).
# Usage: cross/test-aarch64.sh            only what can differ on ARM (see ARM_TESTS), as CI runs it
#        cross/test-aarch64.sh FILTER...  the library tests matching a filter (e.g. `seal::`)
#        cross/test-aarch64.sh --all      every library test
#
# What can differ on ARM: the detector's kernels and their runtime SIMD dispatch (NEON vs scalar),
# Q8_0 quantization, the networks' outputs, pixel conversion and decoding, the light challenge's
# float measurement, and the crypto primitives (ring's per-architecture assembly). The rest of the
# library (state machines, codecs, storage, MQTT) is the same code on every target and is tested on
# the host; the armv7 step of CI also runs the daemon and verifies its captures on a 32-bit ARM core.
ARM_TESTS=(detect:: frame:: challenge::measure challenge::decide record:: seal::keys)
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC="${RUSTC:-/usr/bin/rustc}" RUSTDOC="${RUSTDOC:-/usr/bin/rustdoc}"
export QEMU_CPU="${QEMU_CPU:-cortex-a72}"
test -x "$RUSTC" || { echo "cross/test-aarch64.sh: $RUSTC missing (apt-get install rustc-web)"; exit 2; }
command -v qemu-aarch64-static >/dev/null || { echo "qemu-aarch64-static missing (apt-get install qemu-user-static)"; exit 2; }
# The runner (qemu-aarch64-static, no -L) comes from .cargo/config.toml.
if [ $# -eq 0 ]; then filters=("${ARM_TESTS[@]}"); elif [ "$1" = --all ]; then filters=(); else filters=("$@"); fi
cargo test --locked --target aarch64-unknown-linux-gnu --lib -- --test-threads=2 "${filters[@]}"
if [ $# -eq 0 ]; then
  # The detector's golden and quantization tests (they read ../shared). Tests that start the
  # `veriframe` binary as a child process are skipped: without binfmt_misc an ARM binary cannot be
  # exec'd directly here, only through the runner.
  cargo test --locked --target aarch64-unknown-linux-gnu \
    --test face_golden --test pad_golden --test pad_quant -- --test-threads=2 --skip cli_
fi
