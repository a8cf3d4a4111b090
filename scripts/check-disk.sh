#!/usr/bin/env bash
# Says how much room the build has before it starts, so a run that dies of a full disk
# is explained at the top of its log rather than by a linker's bus error. A clean test
# run takes about 3 GiB in the target dir (2.8 GiB measured on 2026-12-08, the agent's
# TLS and HTTP stack included: 2.7 GiB of build, the Python venv, the Xen test bed);
# below 4 GiB free this warns, it does not stop.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
need_kib=$((4 * 1024 * 1024))
avail_kib=$(df -Pk "$target" | awk 'NR == 2 { print $4 }')
echo "== disk: $((avail_kib / 1024)) MiB free for $target"
if [ "$avail_kib" -lt "$need_kib" ]; then
    echo "warning: a clean test run takes about 3 GiB; with less than $((need_kib / 1024)) MiB free it may fail for lack of space" >&2
fi
