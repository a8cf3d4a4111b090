#!/usr/bin/env bash
# Says how much room the build has before it starts, so a run that dies of a full disk
# is explained at the top of its log rather than by a linker's bus error. A clean test
# build takes about 2 GiB in the target dir (1.9 GiB measured); below 3 GiB free this
# warns, it does not stop.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
need_kib=$((3 * 1024 * 1024))
avail_kib=$(df -Pk "$target" | awk 'NR == 2 { print $4 }')
echo "== disk: $((avail_kib / 1024)) MiB free for $target"
if [ "$avail_kib" -lt "$need_kib" ]; then
    echo "warning: a clean build takes about 2 GiB; with less than $((need_kib / 1024)) MiB free it may fail for lack of space" >&2
fi
