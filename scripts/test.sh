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

echo "== the house: backends link the contract, not the manager"
for crate in ovm-core ovm-backend-kvm ovm-backend-xen ovm-storage-connect ovm-backends ovm-agent; do
    if cargo tree --offline -p "$crate" -e normal --prefix none | grep -E '^(rusqlite|ovm-manager) '; then
        echo "error: $crate depends on the store or the manager (see docs/ARCHITECTURE.md)" >&2
        exit 1
    fi
done

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
