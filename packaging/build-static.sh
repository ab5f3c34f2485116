#!/bin/sh
# Builds kefu as one static executable (no dynamic libraries: `ldd` says "not a dynamic executable").
# kefu uses no OpenSSL and resolves no host names, so glibc's static-linking caveats
# (NSS for getaddrinfo) do not apply. Set CARGO_TARGET_DIR to build elsewhere than target/.
set -eu
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu
binary=$target_dir/x86_64-unknown-linux-gnu/release/kefu
ls -l "$binary"
ldd "$binary" || true
