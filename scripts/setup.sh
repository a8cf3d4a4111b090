#!/usr/bin/env bash
# Installs what ovm's tests need on a fresh Debian machine of this kind. Idempotent: a
# second run installs nothing. Each crate lists its system packages in scripts/deps/*.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # `apt-get update` once per machine (the marker lives outside the work tree so that
    # fresh clones on the same machine do not repeat it).
    marker=/var/tmp/ovm-apt-updated
    if [ ! -f "$marker" ] || [ -n "$(find "$marker" -mmin +1440 2>/dev/null)" ]; then
        apt-get update -qq
        touch "$marker"
    fi
    for deps in scripts/deps/*.sh; do
        # shellcheck source=/dev/null
        . "$deps"
    done
else
    echo "setup: not root or no apt-get: system packages are not installed; tests that need them skip" >&2
fi

command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
