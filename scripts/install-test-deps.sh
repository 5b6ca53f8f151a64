#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (as root):
# Debian openssh-server, slurm-wlm + munge, chromium; npm azurite; a venv with xt-magic[test].
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v slurmctld >/dev/null || need_apt+=(slurm-wlm)
[ -x /usr/sbin/munged ] || need_apt+=(munge)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Azurite 3.35 is the last release that runs on Node 20.
if [ ! -x node_modules/.bin/azurite ]; then
  npm install --no-save --no-audit --no-fund --loglevel=error azurite@3.35.0 >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# a third-party backend plug-in the tests run jobs on (tests/test_backend_plugin.py)
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e tests/fixtures/xt_echo_backend
