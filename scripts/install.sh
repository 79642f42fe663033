#!/usr/bin/env bash
# Creates (or reuses) .venv with the pinned stack. Re-installs only when a requirements file changed.
# Usage: scripts/install.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null || py=python3
stamp_src=$(cat requirements/*.txt pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
stamp="$venv/.sparserec-installed-$stamp_src"
if [ -f "$stamp" ]; then exit 0; fi
echo "[install] creating $venv (pins in requirements/constraints.txt)"
SECONDS=0
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
# pip here warns about missing local index folders; hide those lines, keep pip's exit status.
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }
pip install -c requirements/constraints.txt torch
pip install -c requirements/constraints.txt -r requirements/base.txt -r requirements/dev.txt
# torchrec's metadata names the CUDA package 'fbgemm-gpu'; on a CPU machine we install the CPU
# build under its own name and torchrec without deps (STACK.md). Last, so that no later resolver
# run reports torchrec's 'fbgemm-gpu' requirement as a conflict (--no-deps installs skip that check).
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then fb=fbgemm-gpu; else fb=fbgemm-gpu-cpu; fi
pip install --no-deps -c requirements/constraints.txt "$fb" torchrec
pip install --no-deps -e .
rm -f "$venv"/.sparserec-installed-*
touch "$stamp"
echo "[install] done in ${SECONDS}s ($(du -sh "$venv" | cut -f1))"
