#!/usr/bin/env bash
# README command 1. On this machine (Debian 12, root or a sudoer): install what the
# service needs (Debian's redis-server, a virtualenv with vhdmend[service]), then run the
# main job end to end: `vhdmend demo --stack` starts a private Redis + API + worker,
# generates a bloated demo chain, submits a remediate job over HTTP, shows its progress
# until done and prints the result. Extra arguments go to `vhdmend demo --stack`
# (e.g. --size 2G, --dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v redis-server >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "== installing redis-server and python3-venv (apt)"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing vhdmend[service] into .venv"
.venv/bin/pip install -q -e '.[service]'
exec .venv/bin/vhdmend demo --stack "$@"
