#!/usr/bin/env bash
# The proof run: the resilience suite (and the hostile-input and OpenAPI fuzz tests where they
# exist) under pytest with JUnit XML, then docs/PROOF.md from it. Exit status is pytest's.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
targets=(tests/resilience)
[ -d tests/unit/hostile ] && targets+=(tests/unit/hostile)
[ -f tests/integration/test_openapi_fuzz.py ] && targets+=(tests/integration/test_openapi_fuzz.py)
junit=$(mktemp --suffix=.xml)
trap 'rm -f "$junit"' EXIT
start=$(date +%s)
"$PY" -m pytest "${targets[@]}" -q -p no:cacheprovider --junitxml="$junit" \
    -o junit_family=xunit1 "$@"
status=$?
"$PY" -m tests.support.proof_report "$junit" docs/PROOF.md "$(( $(date +%s) - start ))"
exit "$status"
