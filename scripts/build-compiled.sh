#!/bin/sh
# Builds the mypyc-compiled wheel (see [tool.hatch.build.targets.wheel.hooks.mypyc]
# in pyproject.toml) and unpacks it into build/compiled, where PYTHONPATH=build/compiled
# runs it. It builds from a copy: mypyc leaves its modules beside the sources, and
# there they would shadow the .py files of an editable install.
#
#     sh scripts/build-compiled.sh [PYTHON]
#
# It needs a C compiler and Python's headers. Without them it says so and stops
# (exit 0, so that `make test` goes on without the compiled run), except under CI,
# where the compiled run is required.
set -eu
python=${1:-.venv/bin/python}
rm -rf build/compiled build/compiled-src build/wheels  # never a stale build
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
compiler=$("$python" -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])')
if ! command -v "$compiler" >/dev/null 2>&1 || [ ! -f "$include/Python.h" ]; then
    echo "no C compiler ($compiler) or no $include/Python.h: no compiled build (install gcc and python3-dev)"
    [ -z "${CI:-}" ] && exit 0
    exit 1
fi
mkdir -p build/compiled-src build/wheels
cp -R clientlb pyproject.toml README.md build/compiled-src/
find build/compiled-src -name __pycache__ -prune -exec rm -rf {} +
HATCH_BUILD_HOOK_ENABLE_MYPYC=true "$python" -m pip wheel -q --no-deps -w build/wheels build/compiled-src
"$python" -m pip install -q --no-deps --target build/compiled build/wheels/clientlb-*.whl
rm -rf build/compiled/bin  # the console script: run `python -m clientlb` instead
echo "compiled build: PYTHONPATH=build/compiled"
