#!/bin/sh
# Installs kefu as a systemd service: the binary, the unit and the example config.
# Safe to run twice: the binary and unit are replaced, an existing config is kept
# (the new example is written beside it as kefu.toml.example).
#
# Usage: packaging/install.sh [BINARY] [ROOT]
#   BINARY  the kefu binary to install (default: target/x86_64-unknown-linux-gnu/release/kefu,
#           then target/release/kefu)
#   ROOT    install under this prefix instead of / (for packaging and tests); systemctl is
#           only called when ROOT is /
set -eu

here=$(cd "$(dirname "$0")" && pwd)
binary=${1:-}
root=${2:-/}
if [ -z "$binary" ]; then
    for candidate in "$here/../target/x86_64-unknown-linux-gnu/release/kefu" "$here/../target/release/kefu"; do
        if [ -x "$candidate" ]; then
            binary=$candidate
            break
        fi
    done
fi
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "install.sh: no kefu binary found; build one (packaging/build-static.sh) or pass its path" >&2
    exit 1
fi
root=${root%/}

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/kefu"
# Install to a temporary name and rename, so a running kefu keeps its old file intact.
install -m 0755 "$binary" "$root/usr/local/bin/.kefu.new"
mv -f "$root/usr/local/bin/.kefu.new" "$root/usr/local/bin/kefu"
install -m 0644 "$here/kefu.service" "$root/etc/systemd/system/kefu.service"
if [ -e "$root/etc/kefu/kefu.toml" ]; then
    install -m 0644 "$here/kefu.toml" "$root/etc/kefu/kefu.toml.example"
    echo "kept the existing $root/etc/kefu/kefu.toml (the new example is kefu.toml.example)"
else
    # The unit's StateDirectory; admin commands read the same file, so they find the data too.
    sed 's#^data_dir = .*#data_dir = "/var/lib/kefu"#' "$here/kefu.toml" > "$root/etc/kefu/kefu.toml.new"
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
