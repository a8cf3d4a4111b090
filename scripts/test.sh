#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then format, lint, Rust tests
# (unit, integration, conformance, crash, CLI, backends) and the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

# A one-off full build gains nothing from incremental caches (over a third of the target dir).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
./scripts/check-disk.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo nextest"
cargo nextest run --workspace --no-fail-fast

echo "== doc tests"
cargo test --workspace --doc

if [ -x scripts/test-python.sh ]; then
    echo "== python"
    ./scripts/test-python.sh
fi
