#!/usr/bin/env bash
# The py_overhead benchmark: the same calls and jobs through the Rust API and from
# Python, in one run, release builds on both sides. Prints JSON lines (Python figures
# with the Rust figure as `peer_value`, then the derived overhead and ratios).
#
# Measurements are interleaved: the Rust side (started once, serving requests) measures
# a figure, then Python the same (order swapped each round). A round is 10,000 state
# calls (x5) and 1,000 create+start, sequential and concurrent.
#
#   scripts/bench-py.sh [rounds] [--raw]    (default 5 rounds; --raw: every measurement)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${1:-5}
venv=$root/target/py-venv
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install --quiet --disable-pip-version-check -r ovm-py/requirements-dev.txt
(cd ovm-py && maturin develop --quiet --release) >&2
cargo build --quiet --release -p ovm-py --example py_overhead >&2

python ovm-py/bench/py_overhead.py --rounds "$rounds" "${@:2}" \
    --rust-bin "$CARGO_TARGET_DIR/release/examples/py_overhead"
