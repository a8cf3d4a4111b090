# System packages for the Python bindings (sourced by scripts/test.sh): a Python 3 with
# venv and headers. Machines with their own Python (pyenv, ...) need nothing.
if ! python3 -c 'import venv, ensurepip, sysconfig' >/dev/null 2>&1; then
    for pkg in python3 python3-venv python3-dev; do
        dpkg -s "$pkg" >/dev/null 2>&1 || apt-get install -y "$pkg"
    done
fi
