#!/usr/bin/env bash
# The README's quick start on a bare Debian: does `cargo run --release -- run` need anything
# beyond Rust?
#
# - Builds a minimal Debian of the host's release with debootstrap (`--variant=minbase`): no C
#   compiler, no pkg-config, no libclang, no CA certificates.
# - Bind-mounts the host's Rust toolchain (rustup home and cargo's bin directory) read-only,
#   and clones this repository at REV (default HEAD) into it.
# - Builds the crate there with `--offline --locked` from a copy of the host's crate cache
#   (~/.cargo/registry; ONLINE=1 fetches from crates.io instead, as a user would), first with
#   nothing added, then with `gcc libc6-dev` only if that failed, so the log says what the build
#   needs.
# - Runs the README's command on defaults for 40 s, then `veriframe verify veriframe-data`.
#
# For maintainers only: it needs root, the Debian mirror and crates.io, and a release build from
# scratch (about 15-25 min on 2 cores). CI does not run it.
#
# Usage: tools/bare-debian-check.sh [ROOT]   (ROOT defaults to /var/tmp/bare; REV=... to pick
# the commit). Each run bootstraps ROOT afresh; it refuses a ROOT it did not make.
set -euo pipefail

root=${1:-/var/tmp/bare}
rev=${REV:-HEAD}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse "$rev")
release=$(. /etc/os-release && echo "$VERSION_CODENAME")
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=$(dirname "$(readlink -f "$(command -v cargo)")")
[ "$(id -u)" = 0 ] || { echo "bare-debian-check: run as root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || apt-get install -y debootstrap

if [ -e "$root" ]; then
    [ -e "$root/.veriframe-bare" ] || { echo "bare-debian-check: $root exists and is not ours" >&2; exit 2; }
    rm -rf --one-file-system "$root"
fi
echo "== debootstrap --variant=minbase $release $root"
t0=$SECONDS
debootstrap --variant=minbase "$release" "$root" http://deb.debian.org/debian > /tmp/bare-debootstrap.log
touch "$root/.veriframe-bare"
echo "debootstrap: $((SECONDS - t0)) s"
echo "== bare system: $(chroot "$root" dpkg -l | grep -c '^ii') packages installed"
for x in cc gcc ld pkg-config clang git curl; do
    if chroot "$root" sh -c "command -v $x" >/dev/null; then echo "has $x"; else echo "no $x"; fi
done
echo "libclang files: $(find "$root" -name 'libclang*' | wc -l)"

git clone -q --no-local "$repo" "$root/root/veriframe"
git -C "$root/root/veriframe" checkout -q "$commit"
echo "== clean clone at $commit"
mkdir -p "$root/opt/rustup" "$root/opt/cargo-bin" "$root/root/.cargo"
offline=--offline
if [ "${ONLINE:-0}" = 1 ]; then offline=; else cp -a "${CARGO_HOME:-$HOME/.cargo}/registry" "$root/root/.cargo/"; fi

# Everything below runs in its own mount namespace: the mounts go away when it ends.
unshare -m --propagation private bash -s -- "$root" "$rustup_home" "$cargo_bin" "$offline" <<'INNER'
set -uo pipefail
root=$1 offline=$4
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind -o ro "$2" "$root/opt/rustup"
mount --bind -o ro "$3" "$root/opt/cargo-bin"
in_root() {
    chroot "$root" env -i HOME=/root TERM=dumb PATH=/opt/cargo-bin:/usr/sbin:/usr/bin:/sbin:/bin \
        RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo bash -c "cd /root/veriframe && $1"
}
build() {
    local t0=$SECONDS
    in_root "nice -n 10 cargo build --release --locked $offline 2>&1" > /tmp/bare-build.log
    local rc=$?
    echo "cargo build --release --locked $offline: exit $rc after $((SECONDS - t0)) s"
    [ $rc = 0 ] || grep -E '^error|linker|certificate' /tmp/bare-build.log | head -5
    return $rc
}
in_root 'cargo --version; rustc --version'
echo "== build with nothing added"
if ! build; then
    pkgs="gcc libc6-dev"
    echo "== apt-get install --no-install-recommends $pkgs"
    in_root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1" || exit 2
    build || exit 2
fi
echo "== packages now: $(chroot "$root" dpkg -l | grep -c '^ii')"
echo "== README: cargo run --release -- run (on defaults, stopped with SIGINT after 40 s)"
# "run exit 124" is timeout's own status: it stopped the daemon with SIGINT, as Ctrl-C would.
in_root 'timeout -s INT 40 cargo run --release '"$offline"' -- run > /root/run.log 2>&1; echo "run exit $?"
    echo "detector ready lines: $(grep -c "detector ready" /root/run.log)"
    echo "ESC bytes in the log: $(tr -cd "\033" < /root/run.log | wc -c)"
    tail -n 3 /root/run.log
    target/release/veriframe verify veriframe-data; echo "verify exit $?"'
INNER
