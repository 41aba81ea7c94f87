#!/bin/sh
# Build mint-bridge's wheel into OUTDIR from a checkout that may be read-only: the tree is
# copied to a temporary dir first, because setuptools writes build/ and *.egg-info into the
# source tree. Then, as the site account: pip install OUTDIR/mint_bridge-*.whl (or pipx).
set -eu
out=${1:?usage: scripts/build-wheel.sh OUTDIR}
src=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mint-bridge-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Only what the package needs; never a venv, caches or earlier builds.
tar -C "$src" --exclude=.venv --exclude=.git --exclude=build --exclude='*.egg-info' \
    --exclude=__pycache__ -cf - pyproject.toml setup.py MANIFEST.in LICENSE README.md \
    bridge schedulers node_setup broker examples | tar -C "$tmp" -xf -
"$python" -m pip wheel --no-deps --quiet -w "$out" "$tmp"
ls "$out"/mint_bridge-*.whl
