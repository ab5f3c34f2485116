#!/bin/sh
# Installs kefu as a systemd service: the binary, the unit and the example config.
# Safe to run twice: the binary and unit are replaced, an existing config is kept
# (the new example is written beside it as kefu.toml.example).
#
# Usage:
#   sudo ./install.sh                  from an unpacked release (kefu-VERSION-x86_64-linux/):
#                                      installs the kefu beside this script
#   sudo ./install.sh kefu-VERSION-x86_64-linux.tar.gz [ROOT]
#                                      unpacks a release tarball and installs it
#   packaging/install.sh [BINARY] [ROOT]
#                                      installs BINARY (default: the static build in target/,
#                                      then target/release/kefu) with packaging/'s unit and config
#   ROOT  install under this prefix instead of / (for packaging and tests); systemctl is only
#         called when ROOT is /
#
# A release is checked before anything is installed: its SHA256SUMS must match every file it
# lists (and list the binary), and a tarball must match the .sha256 file beside it, if there
# is one. On a mismatch nothing is changed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# Where the unit and the example config come from: beside this script, or the unpacked tarball.
files=$here
binary=${1:-}
root=${2:-/}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

# Checks a folder's SHA256SUMS; refuses when a listed file differs or the binary is not listed.
verify_sums() {
    folder=$1
    command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is missing (coreutils); cannot check $folder/SHA256SUMS"
    grep -Eq '^[0-9a-f]{64}  kefu$' "$folder/SHA256SUMS" || fail "$folder/SHA256SUMS does not list the kefu binary; refusing to install"
    if ! (cd "$folder" && sha256sum --check --quiet --strict SHA256SUMS) >&2; then
        fail "a file in $folder does not match SHA256SUMS (damaged or altered download); nothing was installed"
    fi
}

case "$binary" in
*.tar.gz | *.tgz)
    tarball=$binary
    [ -f "$tarball" ] || fail "no such file: $tarball"
    if [ -f "$tarball.sha256" ]; then
        command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is missing (coreutils); cannot check $tarball.sha256"
        tarball_dir=$(cd "$(dirname "$tarball")" && pwd)
        if ! (cd "$tarball_dir" && sha256sum --check --quiet --strict "$(basename "$tarball").sha256") >&2; then
            fail "$tarball does not match $tarball.sha256 (damaged or altered download); nothing was installed"
        fi
    fi
    unpacked=$(mktemp -d)
    trap 'rm -rf "$unpacked"' EXIT
    tar -xzf "$tarball" -C "$unpacked" || fail "$tarball is not a readable tar.gz; nothing was installed"
    # The release's one top-level folder.
    set -- "$unpacked"/*/SHA256SUMS
    [ -f "$1" ] || fail "$tarball holds no kefu release (no SHA256SUMS in a top-level folder)"
    files=$(dirname "$1")
    verify_sums "$files"
    binary=$files/kefu
    ;;
"")
    if [ -f "$here/SHA256SUMS" ]; then
        # An unpacked release: the binary is beside this script.
        verify_sums "$here"
        binary=$here/kefu
    else
        for candidate in "$here/../target/x86_64-unknown-linux-gnu/release/kefu" "$here/../target/release/kefu"; do
            if [ -x "$candidate" ]; then
                binary=$candidate
                break
            fi
        done
    fi
    ;;
*)
    # A binary named on the command line; in an unpacked release it is checked like the rest.
    if [ -f "$here/SHA256SUMS" ] && [ "$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")" = "$here/kefu" ]; then
        verify_sums "$here"
    fi
    ;;
esac
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    fail "no kefu binary found; build one (packaging/build-static.sh), pass its path, or pass a release tarball"
fi
[ -f "$files/kefu.service" ] && [ -f "$files/kefu.toml" ] || fail "kefu.service or kefu.toml is missing from $files"
root=${root%/}

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/kefu"
# Install to a temporary name and rename, so a running kefu keeps its old file intact.
install -m 0755 "$binary" "$root/usr/local/bin/.kefu.new"
mv -f "$root/usr/local/bin/.kefu.new" "$root/usr/local/bin/kefu"
install -m 0644 "$files/kefu.service" "$root/etc/systemd/system/kefu.service"
if [ -e "$root/etc/kefu/kefu.toml" ]; then
    install -m 0644 "$files/kefu.toml" "$root/etc/kefu/kefu.toml.example"
    echo "kept the existing $root/etc/kefu/kefu.toml (the new example is kefu.toml.example)"
else
    # The unit's StateDirectory; admin commands read the same file, so they find the data too.
    sed 's#^data_dir = .*#data_dir = "/var/lib/kefu"#' "$files/kefu.toml" > "$root/etc/kefu/kefu.toml.new"
    chmod 0644 "$root/etc/kefu/kefu.toml.new"
    mv -f "$root/etc/kefu/kefu.toml.new" "$root/etc/kefu/kefu.toml"
fi

if [ -z "$root" ]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        echo "installed; start it with: systemctl enable --now kefu"
        echo "the first start prints the admin password: journalctl -u kefu"
    else
        echo "installed; systemd is not running here, so nothing was started"
    fi
else
    echo "installed under $root"
fi
