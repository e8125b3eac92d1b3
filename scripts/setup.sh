#!/usr/bin/env bash
# Idempotent set-up: FFCV's system build dependencies, .venv, pinned Python packages.
# Re-running is cheap: each step checks whether it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SYS_PKGS="pkg-config libopencv-dev libturbojpeg0-dev"
# Optional: the full Fashion-MNIST (idx, canonical content) under /usr/share/datasets/fashion-mnist,
# a real full dataset for the beton builder tests (they skip without it).
OPT_PKGS="dataset-fashion-mnist"
FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

have_sys_deps() {
  command -v pkg-config >/dev/null 2>&1 \
    && pkg-config --exists opencv4 \
    && pkg-config --exists libturbojpeg
}

is_root_with_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }

if ! have_sys_deps; then
  if is_root_with_apt; then
    echo "[setup] installing FFCV's system build dependencies: $SYS_PKGS"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $SYS_PKGS >/dev/null
  else
    echo "[setup] FFCV needs system packages that are missing: $SYS_PKGS" >&2
    echo "[setup] run:  sudo apt-get update && sudo apt-get install -y $SYS_PKGS" >&2
    echo "[setup] (or use the conda route: conda env create -f environment.yml)" >&2
    exit 1
  fi
fi
if [ ! -f "$FASHION" ]; then
  if is_root_with_apt; then
    echo "[setup] installing optional test data: $OPT_PKGS"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $OPT_PKGS >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $OPT_PKGS >/dev/null 2>&1; } \
      || echo "[setup] note: $OPT_PKGS unavailable; the Fashion-MNIST tests will skip"
  else
    echo "[setup] note: optional $OPT_PKGS is not installed; the Fashion-MNIST tests will skip"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi

# Stamp = hash of everything that decides what gets installed.
stamp=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "[setup] installing Python dependencies (torch is large: a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  # ffcv's setup.py needs numpy (and pkgconfig) at build time: install them first and build
  # ffcv without isolation so it compiles against the pinned numpy.
  .venv/bin/python -m pip install -q "$(grep '^numpy==' requirements.txt)" pkgconfig Cython
  .venv/bin/python -m pip install -q --no-build-isolation -r requirements.txt
  .venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
  echo "$stamp" > .venv/.setup-stamp
fi
# ffcv 1.0.2's own __version__ still says 0.0.3rc1: ask the installed distribution instead.
echo "[setup] ok: $(.venv/bin/python -c 'import torch, ffcv, numba, numpy; from importlib.metadata import version; v = version("ffcv"); print(f"torch {torch.__version__}, ffcv {v}, numba {numba.__version__}, numpy {numpy.__version__}")')"
