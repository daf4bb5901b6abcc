#!/usr/bin/env bash
# Quick start, command 1: set up, then run the main job on the embedded defaults:
# every recording in examples/ goes through VAD -> Whisper tiny.en -> coffee domain ->
# Piper at real-time pace; replies land in out/<name>.reply.wav on the input's timeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
halfsec engines
halfsec run examples/*.flac --out-dir out "$@"
