#!/usr/bin/env bash
# The Python package's checks: builds the extension into a venv (target/py-venv), then
# mypy --strict (package, stubs, tests, examples), stubtest (stubs against the built
# module), pytest, and the examples. Exits non-zero on any failure, including a pytest
# run that collected no tests.
#
#   scripts/test-python.sh            debug build (fast to build; what the tests need)
#   OVM_PY_RELEASE=1 scripts/test-python.sh   release build
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/target/py-venv
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

step() { printf '== python: %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
    step "creating $venv"
    python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
step "tools (ovm-py/requirements-dev.txt)"
python -m pip install --quiet --disable-pip-version-check -r ovm-py/requirements-dev.txt

step "build and install the extension"
start=$SECONDS
release=()
[ "${OVM_PY_RELEASE:-0}" = 1 ] && release=(--release)
(cd ovm-py && maturin develop --quiet "${release[@]}")
step "built in $((SECONDS - start)) s"

step "the agent program (tests start real agents)"
cargo build --quiet -p ovm-agent --bin ovm-agent
export OVM_AGENT_BIN=$CARGO_TARGET_DIR/debug/ovm-agent

step "mypy --strict"
python -m mypy --strict --config-file ovm-py/pyproject.toml \
    ovm-py/python/ovm ovm-py/tests ovm-py/bench examples/python

step "stubtest"
(cd ovm-py/python && python -m mypy.stubtest ovm \
    --mypy-config-file ../pyproject.toml --allowlist ../stubtest-allowlist.txt)

step "pytest"
set +e
(cd ovm-py && python -m pytest -q -p no:cacheprovider)
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
elif [ "$rc" -ne 0 ]; then
    exit "$rc"
fi

step "examples"
for ex in examples/python/*.py; do
    echo "-- $ex"
    python "$ex" >/dev/null
done
step "ok"
