#!/usr/bin/env bash
# The JAX environment of the diffrax peer (scripts/bench_diffrax.py): its own venv,
# .venv-jax, never the project's (JAX must not enter the project's constraints).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-jax
.venv-jax/bin/pip install -r scripts/jax-requirements.txt
