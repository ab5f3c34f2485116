#!/bin/sh
# Builds kefu as one static executable: `ldd` says "not a dynamic executable".
# +crt-static links glibc statically; relocation-model=static on the final link makes a plain
# (non-PIE) static executable, which `ldd` recognises as such (without it the result is a static
# PIE, equally free of dynamic libraries, that `ldd` calls "statically linked").
# kefu uses no OpenSSL and resolves no host names, so glibc's static-linking caveats
# (NSS for getaddrinfo) do not apply. Set CARGO_TARGET_DIR to build elsewhere than target/.
set -eu
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
    cargo rustc --release --locked --target x86_64-unknown-linux-gnu -p kefu --bin kefu -- -C relocation-model=static
binary=$target_dir/x86_64-unknown-linux-gnu/release/kefu
ls -l "$binary"
ldd "$binary" || true
