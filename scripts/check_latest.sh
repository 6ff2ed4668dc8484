#!/usr/bin/env bash
# make check-latest: install the newest versions pyproject.toml's ranges allow into a scratch venv
# (default .venv-latest, replaced each time), print which packages differ from requirements.lock, then
# run a fast subset of the tests there: the end-to-end smoke run, the baselines' harness runs, one
# sweep. Exit status: 0 when the install check and the tests pass on the newest versions, 1 otherwise.
set -uo pipefail
venv="${1:-.venv-latest}"
TESTS=(tests/test_end_to_end.py tests/test_baselines_harness.py "tests/test_table1.py::test_killed_sweep_resumes_without_recomputing")
rm -rf "$venv"
install_ok=true
bash scripts/install_env.sh "$venv" --latest || install_ok=false
if [ ! -x "$venv/bin/python" ]; then
    echo "check-latest: the scratch venv could not be created" >&2
    exit 1
fi
echo
echo "== packages: newest allowed vs requirements.lock"
"$venv/bin/python" scripts/lock_diff.py
echo
echo "== tests on the newest versions: ${TESTS[*]}"
tests_ok=true
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" || tests_ok=false
echo
echo "check-latest: install check $($install_ok && echo passed || echo FAILED), tests $($tests_ok && echo passed || echo FAILED)"
$install_ok && $tests_ok
