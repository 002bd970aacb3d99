"""The diffrax benchmark's torch side (the JAX side needs .venv-jax, never present in
tests): the exported arrays define the same ODE as the torch problem, and a missing
JAX environment is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from test_claim_scripts import SCRIPTS, load


def test_the_exported_problem_is_the_torch_problem(tmp_path: Path) -> None:
    bench = load("bench_diffrax")
    problem = bench.bench.mlp_problem(dim=4, hidden=8, batch=3)
    bench.export(problem, tmp_path / "problem.npz")
    data = np.load(tmp_path / "problem.npz")
    # diffrax_peer's vector field, in numpy
    ours = np.tanh(data["y0"] @ data["w1"].T + data["b1"]) @ data["w2"].T + data["b2"]
    with torch.no_grad():
        expected = problem.func(0.0, problem.y0).numpy()
    assert data["w1"].shape == (8, 4) and data["y0"].shape == (3, 4)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(data["weight"], problem.weight.numpy())


def test_a_missing_jax_environment_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_diffrax.py"), "--jax-python",
                           str(tmp_path / "none" / "python")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "scripts/make_jax_env.sh" in done.stderr.strip().splitlines()[-1]
