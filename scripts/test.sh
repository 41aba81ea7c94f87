#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine (run as root), then run it:
# Debian packages (OpenSSH server and client, Slurm and munge, PostgreSQL, Chromium), a venv with
# mint-bridge and its test and docs tools, OpenPBS (built from third_party/openpbs when absent),
# ruff, mypy, the docs site (mkdocs --strict) and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need_pkgs+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
# A real single-node Slurm (controller, node daemon, munge) and its PBS-style wrappers.
command -v slurmctld >/dev/null 2>&1 || need_pkgs+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || need_pkgs+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need_pkgs+=(slurm-client)
command -v munged >/dev/null 2>&1 || need_pkgs+=(munge)
# `ip` makes the veth pair of the OpenPBS tests' own network namespace.
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
[ -x /usr/bin/qsub ] || need_pkgs+=(slurm-wlm-torque)
# A real PostgreSQL server for the broker's PostgreSQL store (started by the tests themselves).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_pkgs+=(postgresql)
# A real headless browser and its WebDriver for the broker's web console tests.
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
# promtool checks the example alert rules and scrape config (examples/monitoring).
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
# The wheel test: an ordinary account builds the wheel and installs it into a venv of the
# system Python; the unit files setup writes are checked with systemd-analyze.
/usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need_pkgs+=(python3-venv)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
# HAProxy in front of two broker instances for the multi-instance tests (started by the tests).
[ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
# libfaketime steps one process's wall clock for the clock-step proof scenarios; cc builds the
# small preload shim they load before it (tests/support/clock_shim.c).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need_pkgs+=(faketime)
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing ${need_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    else
        echo "missing ${need_pkgs[*]}; install them or run as root" >&2
    fi
fi

# A real OpenPBS for the PBS adapters' tests, built once from the vendored source (~3.5 min).
# Only built and installed here, never started: tests/support/openpbs.py starts it for the tests
# inside namespaces of their own (OpenPBS refuses a loopback-only host) and stops it after.
if [ ! -x /opt/pbs/bin/qstat ]; then
    if [ "$(id -u)" = 0 ]; then
        scripts/build_openpbs.sh
    else
        echo "OpenPBS missing; run scripts/build_openpbs.sh as root" >&2
    fi
fi

python3 -m venv .venv
# A strict editable install: a tree of links, found like a regular install (what sites run).
# The default mode installs an import hook instead, which every interpreter loads at start
# whether it needs it or not (~25 ms with pathlib, urllib and more), so start-up times measured
# here would not be a site's. New modules appear at the next run of this script.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' \
    --config-settings editable_mode=strict

echo "== ruff"
.venv/bin/ruff check bridge schedulers node_setup broker tests benchmarks examples
echo "== mypy"
.venv/bin/mypy
echo "== docs"
# --strict: a broken link or anchor, or a docs page missing from the nav, fails the run.
docs_out=$(mktemp -d)
# (Material prints a notice about its successor on every build otherwise.)
export NO_MKDOCS_2_WARNING=1
# Not --quiet: with it, mkdocs 1.6 counts no warnings and --strict passes anything.
.venv/bin/mkdocs build --strict --site-dir "$docs_out"
rm -rf "$docs_out"
echo "== pytest"
.venv/bin/python -m pytest "$@"
