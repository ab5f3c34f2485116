#!/bin/sh
# Makes the release tarball: dist/kefu-VERSION-x86_64-linux.tar.gz and its .sha256 beside it.
# It holds one folder, kefu-VERSION-x86_64-linux/, with the static binary, install.sh,
# kefu.service, the example kefu.toml, README.md and SHA256SUMS (the sums of the other files),
# so `sudo ./install.sh` in the unpacked folder checks and installs it.
#
# Usage: packaging/release.sh [--binary PATH] [--out DIR]
#   --binary PATH  package this binary instead of building one with packaging/build-static.sh
#                  (also KEFU_BINARY=PATH)
#   --out DIR      write into DIR instead of dist/
#
# The same sources and binary give the same bytes: names in order, every file dated by the
# last commit (or SOURCE_DATE_EPOCH), owner and group 0, gzip without a name or time.
set -eu
cd "$(dirname "$0")/.."
binary=${KEFU_BINARY:-}
out=dist
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    *) echo "release.sh: unknown argument $1 (see the usage at the top of packaging/release.sh)" >&2; exit 2 ;;
    esac
done

version=$(awk -F'"' '/^\[/ { section = $0 } section == "[package]" && /^version = / { print $2; exit }' Cargo.toml)
[ -n "$version" ] || { echo "release.sh: no version in Cargo.toml's [package]" >&2; exit 1; }
name=kefu-$version-x86_64-linux

if [ -z "$binary" ]; then
    sh packaging/build-static.sh
    binary=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/kefu
fi
[ -x "$binary" ] || { echo "release.sh: $binary is not an executable" >&2; exit 1; }

epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
folder=$stage/$name
mkdir -m 0755 "$folder"
install -m 0755 "$binary" "$folder/kefu"
install -m 0755 packaging/install.sh "$folder/install.sh"
install -m 0644 packaging/kefu.service packaging/kefu.toml README.md "$folder/"
for license in LICENSE*; do
    [ -f "$license" ] && install -m 0644 "$license" "$folder/"
done
# Written outside the folder first, so the listing never includes SHA256SUMS itself.
(cd "$folder" && LC_ALL=C ls | LC_ALL=C sort | xargs sha256sum > "$stage/SHA256SUMS")
install -m 0644 "$stage/SHA256SUMS" "$folder/SHA256SUMS"
find "$folder" -exec touch -h -d "@$epoch" {} +

mkdir -p "$out"
tarball=$out/$name.tar.gz
LC_ALL=C tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$stage" -cf - "$name" | gzip -n -9 > "$tarball.new"
mv -f "$tarball.new" "$tarball"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
ls -l "$tarball"
cat "$tarball.sha256"
