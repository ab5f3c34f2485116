#!/bin/sh
# Builds kefu as one static executable (no dynamic libraries: `ldd` says "not a dynamic executable").
# kefu uses no OpenSSL and resolves no host names, so glibc's static-linking caveats
# (NSS for getaddrinfo) do not apply.
set -eu
cd "$(dirname "$0")/.."
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu
binary=target/x86_64-unknown-linux-gnu/release/kefu
ls -l "$binary"
ldd "$binary" || true
