"""Mutation testing: would the tests notice a plausible bug?

    python scripts/mutate.py [NAME ...] [--list] [--fast] [--timeout S]

Each mutation below is one small, named edit of the library (a bug someone could
plausibly make). The script copies the working tree (git's tracked and untracked,
not ignored, files) to a temporary folder, checks the tests it uses pass there, then
applies each mutation alone, runs the tests that should notice it and reports it
``killed`` (naming the tests that failed) or ``SURVIVED``, with the score
killed / (killed + survived). A mutation whose ``old`` text is not found exactly once
in its file is an ``ERROR`` (the code moved: re-anchor it on the new code), never
skipped. Exit status 0 only when every mutation is killed.

Anchor each edit on a small, stable snippet; when a refactor moves the code, move the
mutation with it rather than deleting it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE_TESTS = ("tests/test_gradients.py", "tests/test_solvers.py")
TRAINER_TESTS = ("tests/test_trainer.py",)
RESUME_TESTS = ("tests/test_resume.py",)
CLI_TESTS = ("tests/test_cli.py",)
PER_SAMPLE_TESTS = ("tests/test_per_sample.py",)
CLAIMS_TESTS = ("tests/test_claims.py",)


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once in ``path``) by ``new``."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutation:
    name: str
    bug: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


def mutation(name: str, bug: str, *edits: tuple[str, str, str],
             tests: tuple[str, ...] = CORE_TESTS) -> Mutation:
    return Mutation(name, bug, tuple(Edit(*edit) for edit in edits), tests)


CONTROL, INTEGRATE = "aca/solvers/control.py", "aca/solvers/integrate.py"
STEP, ODEINT = "aca/solvers/step.py", "aca/odeint.py"
NEWTON, IMPLICIT_TESTS = "aca/solvers/newton.py", ("tests/test_implicit.py",)
ACA, ADJOINT, BASE = "aca/gradients/aca.py", "aca/gradients/adjoint.py", "aca/gradients/base.py"
WRAPPERS, WATCH = "aca/solvers/wrappers.py", "aca/gradients/watch.py"
CONTRACT_TESTS = ("tests/test_contract.py",)
TRAINER, CLI = "aca/train/trainer.py", "aca/cli.py"
TORCHDIFFEQ = "aca/torchdiffeq/__init__.py"
PROVENANCE, DRIFT = "aca/provenance.py", "aca/report/drift.py"
CLAIMS = "aca/report/claims.py"
CLAIMS_COST, VERDICTS = "aca/report/claims_cost.py", "aca/report/verdicts.py"

MUTATIONS = [
    # the seven of issue 19
    mutation("naive-step-size-detached", "naive: the step-size growth factor leaves the graph",
             (CONTROL, "h_new = h * self.factor(ratio, state.prev_ratio)",
              "h_new = h * self.factor(ratio.detach(), state.prev_ratio)")),
    mutation("safety-0.85", "the controller's safety factor 0.9 -> 0.85 (the one default)",
             (CONTROL, "safety: float = 0.9", "safety: float = 0.85")),
    mutation("shrink-after-accept", "the step may shrink after an accepted step",
             (CONTROL, "low = (value(ratio) > 1.0) * (self.dfactor - 1.0) + 1.0",
              "low = torch.full_like(value(ratio), self.dfactor)")),
    mutation("adjoint-rms-norm", "the adjoint's mixed error norm replaced by one RMS norm",
             (ADJOINT, "            return torch.stack(parts).amax(0)",
              "            return rms_norm(z, groups)")),
    mutation("resume-without-rng", "resume does not restore the RNG state",
             (TRAINER, '        checkpoint.set_rng_state(state["rng"])\n', ""),
             tests=TRAINER_TESTS),
    mutation("no-set-epoch", "the sampler shuffles every epoch the same way",
             (TRAINER, "        sampler.set_epoch(epoch)\n", ""), tests=TRAINER_TESTS),
    mutation("cli-drops-odeerror", "aca.ODEError left out of the CLI's one-line errors",
             (CLI, "OverrideParseException, AcaError)):", "OverrideParseException, ConfigError)):"),
             tests=CLI_TESTS),
    # core
    mutation("initial-step-exponent", "Hairer's initial step with exponent 1/(order+1)",
             (CONTROL, "d_max)) ** (1.0 / self.order)", "d_max)) ** (1.0 / (self.order + 1))")),
    mutation("ifactor-5", "the controller's largest growth 10 -> 5 (the one default)",
             (CONTROL, "ifactor: float = 10.0", "ifactor: float = 5.0")),
    mutation("error-scale-y0-only", "the error scale ignores the new state y1",
             (CONTROL, "torch.maximum(y0.abs(), y1.abs())", "y0.abs()")),
    mutation("stage-time", "every stage evaluated at the end of the step",
             (STEP, "ks.append(func(end if c == 1.0 else torch.add(t_y, h_y, alpha=c), stage))",
              "ks.append(func(end if c == 1.0 else t_y + h_y, stage))")),
    mutation("aca-drops-intermediate-outputs",
             "aca: losses on outputs interpolated inside a step ignored",
             (ACA, "outputs.append((ks, rows, interpolate(",
              "outputs.append((ks, rows, 0 * interpolate(")),
    mutation("aca-drops-landed-outputs", "aca: losses on outputs a step lands on ignored",
             (ACA, "outputs.append((ks, rows, y_next.reshape(groups, -1)[rows]))",
              "outputs.append((ks, rows, 0 * y_next.reshape(groups, -1)[rows]))")),
    mutation("aca-interpolant-time-gradient-dropped",
             "aca: an output time inside a step does not move the interpolant",
             (ACA, "theta = (times[rows, ks] - t.reshape(-1)[rows])",
              "theta = (times[rows, ks].detach() - t.reshape(-1)[rows])"),
             tests=("tests/test_contract.py",)),
    mutation("dense-theta-off-by-one", "each output interpolated at the previous output's time",
             (INTEGRATE, "theta = (between[rows, ks] - t.reshape(-1)[rows])",
              "theta = (between[rows, (ks - 1).clamp_min(0)] - t.reshape(-1)[rows])"),
             tests=("tests/test_dense.py",)),
    mutation("aca-drops-y0-output", "aca: the loss on ys[0] does not reach y0",
             (ACA, "adjoint = adjoint + grad_ys[0]", "adjoint = adjoint")),
    mutation("adjoint-param-sign", "adjoint: parameter gradients with the wrong sign",
             (ADJOINT, "return self.join(f, back[0], back[1:])",
              "return self.join(f, back[0], [-g for g in back[1:]])")),
    mutation("adjoint-drops-intermediate-outputs",
             "adjoint: losses on intermediate outputs ignored",
             (ADJOINT, "adjoint = adjoint + grad_ys[k - 1]", "adjoint = adjoint")),
    mutation("controller-options-dropped", "odeint's safety/ifactor/dfactor/pi_beta ignored",
             (BASE, "frozen=frozen, **options.controller_settings)", "frozen=frozen)")),
    mutation("pi-exponent-sign", "the PI controller's exponent 1/order + 0.75 beta",
             (CONTROL, "1.0 / self.order - 0.75 * self.pi_beta",
              "1.0 / self.order + 0.75 * self.pi_beta")),
    mutation("naive-controller-differs",
             "naive differentiates the clipped growth factor as if it were not clipped (the "
             "value is the clipped one, only its derivative differs)",
             (CONTROL, "return growth.clamp_min(low).clamp_max(self.ifactor)",
              "return growth + (growth.clamp_min(low).clamp_max(self.ifactor) - growth).detach()")),
    mutation("aca-recompute-uncounted", "aca: recomputed blocks missing from the backward NFE",
             (ACA, "            return self.take(j, y)[0]\n",
              "            counted, y_next = self.nfe, self.take(j, y)[0]\n"
              "            self.nfe = counted\n            return y_next\n"),
             tests=("tests/test_contract.py", "tests/test_dense.py")),
    mutation("buffers-not-restored", "backward moves batch-norm running statistics",
             (BASE, "                buffer.copy_(copy)\n", "                pass\n")),
    # the batch-native core (issue 25)
    mutation("times-in-state-dtype", "times kept in the state's dtype (float32 near t = 1e4)",
             (ODEINT, "return torch.promote_types(torch.float64, y0.dtype)", "return y0.dtype"),
             tests=PER_SAMPLE_TESTS),
    mutation("non-finite-trial-in-graph", "naive: a nan trial step stays in the graph",
             (INTEGRATE, "if step.y.requires_grad:  # a non-finite trial",
              "if False:  # a non-finite trial"), tests=PER_SAMPLE_TESTS),
    mutation("zero-scale-unnamed", "atol = 0 with a zero component is not named",
             (CONTROL, "zero = (scale.reshape(groups, -1) == 0).any(1) if self.atol == 0 else None",
              "zero = None"), tests=("tests/test_errors.py",)),
    mutation("time-does-not-move", "an accepted step that does not move t is not an underflow",
             (INTEGRATE, "failed.masked_fill(running & (h == 0), int(Status.UNDERFLOW))",
              "failed"), tests=("tests/test_errors.py",)),
    # the gradient contract's second round (issue 26)
    mutation("unseen-after-first-evaluation",
             "aca: a tensor a closure reaches after its first evaluation goes unchecked",
             (ACA, "            if problem.closure:  # a tensor first reached",
              "            if False:  # a tensor first reached"), tests=CONTRACT_TESTS),
    mutation("changed-buffers-unchecked", "aca: buffers func changes in place go unchecked",
             (ACA, "        problem.refuse_changed_buffers(versions)\n", ""),
             tests=CONTRACT_TESTS),
    mutation("in-place-input-unchecked", "func changing its input in place goes unchecked",
             (WATCH, "        if y._version != version:\n            raise changed_in_place()\n",
              ""), tests=CONTRACT_TESTS),
    mutation("transforms-unchecked", "torch.func transforms and forward mode go unchecked",
             (ODEINT, "    _refuse_transforms(problem, y0)\n", ""), tests=CONTRACT_TESTS),
    mutation("derived-closure-graph-freed",
             "aca: the rebuild frees a graph func's closure shares with the parameters",
             (ACA, "allow_unused=True,\n                                        retain_graph=True)",
              "allow_unused=True)"), tests=CONTRACT_TESTS),
    mutation("end-stage-at-the-end", "stages at c = 1 evaluated at the step's end, not inside",
             (STEP, "end = torch.nextafter(value(t_next).to(dtype), value(t).to(dtype))",
              "end = value(t_next).to(dtype)"),
             tests=("tests/test_torchdiffeq_dropin.py",)),
    mutation("step-to-is-an-output", "a step to a step_t time counts as an output landing",
             (WRAPPERS, "return h, t_next, landing & (stop.view(t.shape) == target)",
              "return h, t_next, landing"), tests=("tests/test_torchdiffeq_dropin.py",)),
    # trainer
    mutation("no-epoch-schedule", "the learning-rate schedule never steps",
             (TRAINER, "            if not self.step_scheduler_per_batch:\n"
                       "                self.scheduler.step()\n", ""), tests=TRAINER_TESTS),
    mutation("best-is-worst", "best.pt keeps the worst monitored value",
             (TRAINER, "(value < self.best if", "(value > self.best if"), tests=TRAINER_TESTS),
    mutation("resume-without-optimizer", "resume does not restore the optimizer state",
             (TRAINER, '        self.optimizer.load_state_dict(state["optimizer"])\n', ""),
             tests=TRAINER_TESTS),
    mutation("grad-clip-ignored", "trainer.grad_clip does nothing",
             (TRAINER, "torch.nn.utils.clip_grad_norm_(self.model.parameters(), "
                       "self.settings.grad_clip)", "pass"), tests=TRAINER_TESTS),
    mutation("test-metrics-unweighted", "test metrics averaged without batch-size weights",
             (TRAINER, "sums[key] = sums.get(key, 0.0) + float(value) * count\n"
                       '                sums["count"] += count',
              "sums[key] = sums.get(key, 0.0) + float(value)\n"
              '                sums["count"] += count'), tests=TRAINER_TESTS),
    mutation("global-step-not-counted", "the trainer's global step never advances",
             (TRAINER, "                self.step += 1\n", ""), tests=TRAINER_TESTS),
    mutation("resume-restarts-step", "resume starts the global step (KL annealing) over",
             (TRAINER, 'self.step = state.get("step", ', 'self.step = 0 * state.get("step", '),
             tests=RESUME_TESTS),
    # aca-run (issue 29)
    mutation("run-folder-unlocked", "a second run may write a run folder a running one holds",
             (TRAINER, "                held.enter_context(run_folder_lock(out_dir))\n",
              "                pass\n"), tests=CLI_TESTS),
    mutation("monitor-unchecked", "a trainer.monitor that is not a metric trains unnoticed",
             (TRAINER, "        self.check_monitor()\n", ""), tests=CLI_TESTS),
    # per-sample steps (issue 16)
    mutation("per-sample-norm-mixes-samples",
             "per_sample: the error norm is taken over the whole batch, not each sample",
             (CONTROL, "return torch.linalg.vector_norm(x, dim=1) * x.shape[1] ** -0.5",
              "return (torch.linalg.vector_norm(x) * x.numel() ** -0.5).expand(groups)"),
             tests=PER_SAMPLE_TESTS),
    mutation("per-sample-fsal-after-reject",
             "per_sample: a rejected sample's next attempt starts from the rejected step's "
             "last stage",
             (INTEGRATE, "torch.where(\n                accept, step.k_last, k1)", "step.k_last"),
             tests=PER_SAMPLE_TESTS),
    mutation("per-sample-pi-memory-on-reject",
             "per_sample: the PI controller remembers the error ratio of rejected steps too",
             (CONTROL, "torch.where(accept, value(ratio).clamp_min(1e-4), prev_ratio)",
              "value(ratio).clamp_min(1e-4)")),
    mutation("per-sample-landing-off-by-one",
             "per_sample aca: the end time's gradient goes to the step before the landing one",
             (ACA, "lands = cp.lands.get(j) if dense else None",
              "lands = cp.lands.get(j + 1) if dense else None"), tests=PER_SAMPLE_TESTS),
    mutation("per-sample-adjoint-rejected-quadrature",
             "per_sample adjoint: rejected attempts add to the parameter gradient too",
             (ADJOINT, "weight = (-h * accept).to(z.dtype)[:, 0]",
              "weight = (-h).to(z.dtype)[:, 0]"),
             tests=PER_SAMPLE_TESTS),
    mutation("per-sample-adjoint-state-norm",
             "per_sample adjoint: the reverse solve's error norm leaves the adjoint out",
             (ADJOINT, "parts = [rms_norm(y, groups), rms_norm(adjoint, groups)]",
              "parts = [rms_norm(y, groups)]"), tests=PER_SAMPLE_TESTS),
    mutation("per-sample-stale-first-stage",
             "per_sample, non-FSAL solvers: the first stage of the start is reused after "
             "every accepted step",
             (INTEGRATE, "y, t, k1 = step.y, t_next, step.k_last",
              "y, t, k1 = step.y, t_next, k1 if step.k_last is None else step.k_last"),
             tests=PER_SAMPLE_TESTS),
    mutation("per-sample-grid-lands-late",
             "per_sample fixed grid: the landing step is one grid step late (overshoots)",
             (CONTROL, "landing = taken * self.step_size >= span.abs()",
              "landing = state.taken * self.step_size >= span.abs()"),
             tests=PER_SAMPLE_TESTS),
    mutation("cli-hides-bugs", "aca-run prints any exception as one line, hiding real bugs",
             (CLI, "OverrideParseException, AcaError)):", "OverrideParseException, Exception)):"),
             tests=CLI_TESTS),
    # issue 27: what a fresh set of mutants showed untested
    mutation("adjoint-tolerances-ignored",
             "aca.torchdiffeq: adjoint_rtol/adjoint_atol ignored (the forward tolerances used)",
             (TORCHDIFFEQ, "rtol=call.rtol if adjoint_rtol is None else",
              "rtol=call.rtol if True else"),
             (TORCHDIFFEQ, "atol=call.atol if adjoint_atol is None else",
              "atol=call.atol if True else"),
             tests=("tests/test_torchdiffeq_dropin.py",)),
    mutation("sampler-ignores-seed", "every seed of a sweep sees the same batch order",
             (TRAINER, "shuffle=True, seed=self.cfg.seed)", "shuffle=True, seed=0)"),
             tests=TRAINER_TESTS),
    mutation("resume-forgets-best",
             "resume does not restore the best metric: the next epoch always overwrites best.pt",
             (TRAINER, 'self.start_epoch, self.best, self.history = state["epoch"], state["best"],',
              'self.start_epoch, self.best, self.history = state["epoch"], None,'),
             tests=TRAINER_TESTS),
    mutation("binomial-extra-slot",
             "bounded aca: one state more than max_checkpoints allows between kept states",
             (ACA, "slots = max(budget - len(starts), ", "slots = max(budget - len(starts) + 1, "),
             tests=("tests/test_gradients.py", "tests/test_contract.py")),
    mutation("provenance-skips-scripts",
             "the code hash leaves out the scripts that write records (the bench's rtol)",
             (PROVENANCE, "CODE_PATHS = CODE_DIRS + RECORD_SCRIPTS", "CODE_PATHS = CODE_DIRS"),
             tests=("tests/test_provenance.py",)),
    mutation("provenance-skips-summaries",
             "the code hash leaves out aca/report's summaries, which write the tables",
             (PROVENANCE, '("claims", "claims_cost", "drift",',
              '("claims", "claims_cost", "drift", "summaries",'),
             tests=("tests/test_provenance.py",)),
    mutation("hopper-data-unstamped", "a run's stamp leaves out the checksum of generated data",
             (PROVENANCE, '"provenance": {**stamp(), **data_stamp()}}', '"provenance": stamp()}'),
             tests=("tests/test_resume.py::test_a_resumed_run_equals_an_uninterrupted_one",)),
    mutation("drift-skips-unstamped", "drift passes over a committed record without a stamp",
             (DRIFT, 'raise DataError(f"{spec.record} has no provenance stamp',
              'return [] if True else DataError(f"{spec.record} has no provenance stamp'),
             tests=("tests/test_drift.py",)),
    # the claim rules (issue 27): each threshold pinned by values just inside and outside it
    mutation("three-body-tolerance-1e-3", "three-body masses count as recovered within 1e-3",
             (CLAIMS, "THREE_BODY_TOLERANCE = 1e-4", "THREE_BODY_TOLERANCE = 1e-3"),
             tests=CLAIMS_TESTS),
    mutation("cost-rule-max", "the cost rule's reproduced needs one setting, not every one",
             (CLAIMS_COST, "REPRODUCED if min(ratios) > 1", "REPRODUCED if max(ratios) > 1"),
             tests=CLAIMS_TESTS),
    mutation("toy-share-0.6", "toy partly needs ACA lowest at 60 % of the T, not half",
             (CLAIMS, "TOY_PARTLY_SHARE = 0.5", "TOY_PARTLY_SHARE = 0.6"), tests=CLAIMS_TESTS),
    mutation("hopper-better-model-vs-baseline",
             "Hopper judged where the better of ACA and adjoint beats the baselines",
             (CLAIMS, "worst = max(statistics.fmean(aca)", "worst = min(statistics.fmean(aca)"),
             tests=CLAIMS_TESTS),
    mutation("noise-margin-0.5", "a difference counts beyond half the seeds' spread",
             (VERDICTS, "NOISE_MARGIN = 1.0", "NOISE_MARGIN = 0.5"), tests=CLAIMS_TESTS),
    mutation("width-rule-apart", "Table 1's width slopes: naive need not be twice ACA's",
             (CLAIMS_COST, "apart = slopes[\"naive\"] >= 2 * slopes[\"aca\"]", "apart = True"),
             tests=CLAIMS_TESTS),
    mutation("replay-digest-unchecked",
             "ACA's rebuild does not compare the generators' state with the forward's",
             (ACA, "if self.replayed.digest() != digests[replayed]:", "if False:"),
             tests=("tests/test_contract.py",)),
    mutation("ift-through-iterate-only",
             "ACA's rebuilt implicit stage keeps no implicit-function-theorem derivative",
             (NEWTON, "return z + (delta - delta.detach())", "return z"),
             tests=IMPLICIT_TESTS),
    mutation("ift-jacobian-at-start",
             "the IFT solve uses I - hγ J at the step's start, not at the converged stage",
             (NEWTON, "matrix = iteration_matrix(jacobian(func, t, z, groups), hg)",
              "matrix = iteration_matrix(jacobian(func, t, base, groups), hg)"),
             tests=IMPLICIT_TESTS),
    mutation("jacobian-transposed", "the Newton matrix is built from J transposed",
             (NEWTON, "return torch.stack([row.reshape(groups, size) for row in rows], 1)",
              "return torch.stack([row.reshape(groups, size) for row in rows], 2)"),
             tests=IMPLICIT_TESTS),
    mutation("newton-floor-dropped",
             "Newton's convergence test ignores the residual's rounding (float32, rtol 1e-6)",
             (NEWTON, "torch.add(base_rounding, magnitude, alpha=ulps))",
              "torch.zeros_like(base_rounding))"),
             tests=IMPLICIT_TESTS),
    mutation("newton-converged-group-iterates",
             "a group that converged keeps taking its updates while others iterate",
             (NEWTON, "z = torch.where(running, z - update, z)", "z = z - update"),
             tests=IMPLICIT_TESTS),
    mutation("newton-failure-accepted", "a stage whose Newton iteration failed is accepted",
             (INTEGRATE, "if step.failed is not None:", "if False:"),
             tests=IMPLICIT_TESTS),
    mutation("newton-failure-infinite-error",
             "a failed Newton iteration rejects by an infinite error (naive's gradient nan)",
             (STEP, "error = torch.where(failed, 0.0, error)",
              "error = torch.where(failed, torch.inf, error)"),
             tests=IMPLICIT_TESTS),
    mutation("min-step-forces-failed-newton",
             "a step at min_step whose Newton iteration failed is accepted unsolved",
             (WRAPPERS, "must_reject = must_reject | reject", "must_reject = must_reject"),
             tests=IMPLICIT_TESTS),
    mutation("min-step-forces-non-finite",
             "a step at min_step whose state is inf/nan is accepted and carried on",
             (WRAPPERS, "must_reject = must_reject.view(forced.shape)",
              "must_reject = torch.zeros_like(forced)"),
             tests=("tests/test_torchdiffeq_dropin.py",)),
    mutation("min-step-judged-by-rounded-step",
             "a step at min_step is forced by t_next - t (rounded past min_step): rejected "
             "without end",
             (WRAPPERS, "forced = running & (state.h.detach().abs() <= self.min_step)",
              "forced = running & (h.detach().abs() <= self.min_step)"),
             tests=("tests/test_torchdiffeq_dropin.py",)),
    mutation("clipped-step-keeps-its-derivative",
             "a step size clipped to min_step keeps the unclipped size's derivative, scaled",
             (WRAPPERS, "h=torch.copysign(state.h.abs().clamp(self.min_step, self.max_step),\n"
              "                                               state.h))",
              "h=state.h * (state.h.abs().clamp(self.min_step, self.max_step)\n"
              "                                               / state.h.abs()).detach())"),
             tests=("tests/test_torchdiffeq_dropin.py",)),
    mutation("rebuilt-jacobians-uncounted",
             "stats.jacobians leaves out the Jacobians of ACA's rebuilt implicit steps",
             (ACA, "self.jacobians + step.jacobians", "self.jacobians"),
             tests=IMPLICIT_TESTS),
    mutation("rank-exits-through-teardown",
             "a torchrun rank ends through the interpreter's teardown (gloo's abort there)",
             ("aca/train/distributed.py", "        os._exit(0)", "        sys.exit(0)"),
             tests=("tests/test_ddp.py::test_end_rank_leaves_the_group_and_exits_at_once",)),
    mutation("stage-derivative-scaled", "k_i = (z - base) / (hγ) with hγ off by 0.01 %",
             (STEP, "ks.append((z - base) / torch.where(hg == 0, 1.0, hg))",
              "ks.append((z - base) / torch.where(hg == 0, 1.0, hg * 1.0001))"),
             tests=IMPLICIT_TESTS),
    mutation("reverse-quadrature-explicit-stages", "the per-sample adjoint's parameter "
             "quadrature leaves an implicit stage's own γ·k_i out of its stage value",
             (ADJOINT, "row = (*tableau.a[i], *tableau.diagonal[i:i + 1])",
              "row = tuple(tableau.a[i])"),
             tests=("tests/test_implicit.py::"
                    "test_the_adjoint_solves_its_reverse_ode_with_an_implicit_method",)),
    mutation("singular-matrix-raises", "the iteration matrix factorised by lu_factor, which "
             "raises a bare RuntimeError when it is singular",
             (STEP, "torch.linalg.lu_factor_ex(iteration_matrix(jac, hg))[:2]",
              "torch.linalg.lu_factor(iteration_matrix(jac, hg))"),
             tests=("tests/test_implicit.py::"
                    "test_a_singular_iteration_matrix_is_a_newton_failure_not_a_torch_error",)),
    mutation("implicit-second-order-allowed", "ACA's create_graph rebuild of implicit steps "
             "allowed, whose stage derivative is exact to first order only",
             (ACA, "if problem.tableau.implicit:  # z* + δ - δ.detach()",
              "if False:  # z* + δ - δ.detach()"),
             tests=("tests/test_implicit.py::"
                    "test_second_order_gradients_through_implicit_steps_are_naive_s_or_refused",)),
    mutation("reverse-jacobian-detached", "the augmented dynamics are not differentiated when "
             "Newton forms their Jacobian (it is zero: a fixed-point iteration)",
             (ADJOINT, "differentiable = z.requires_grad", "differentiable = False"),
             tests=("tests/test_implicit.py::"
                    "test_the_reverse_newton_uses_the_augmented_system_s_jacobian",)),
]


def copy_tree(destination: Path) -> None:
    """The working tree as git sees it (tracked and untracked files, not ignored ones)."""
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached",
                             "--others", "--exclude-standard"], capture_output=True, text=True,
                            check=True).stdout
    for name in filter(None, listed.split("\0")):
        source, target = REPO_ROOT / name, destination / name
        if not os.path.lexists(source):
            continue  # deleted, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)


def anchor_errors(mutation_: Mutation, tree: Path) -> list[str]:
    """Why the mutation cannot be applied to ``tree`` (empty: it can)."""
    errors = []
    for edit in mutation_.edits:
        path = tree / edit.path
        count = path.read_text().count(edit.old) if path.is_file() else 0
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            errors.append(f"{edit.path}: {edit.old.strip()!r} {where}; re-anchor this mutation")
    return errors


def run_tests(tree: Path, tests: tuple[str, ...], fast: bool,
              timeout: float) -> tuple[int, list[str]]:
    """pytest in ``tree`` (its own aca first on the path, no stale bytecode): exit status and
    the failing tests (-1: timed out)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
               *(["-x"] if fast else []), *tests]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, []
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, flags=re.MULTILINE)
    return done.returncode, [name.split(" - ")[0] for name in failed]


def short_test(name: str) -> str:
    return name.removeprefix("tests/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--fast", action="store_true",
                        help="stop each run at its first failing test (names one killer)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test run")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown mutation {unknown[0]!r}; choose from: {', '.join(known)}")
    chosen = [known[name] for name in args.names] or MUTATIONS
    if args.list:
        for m in chosen:
            print(f"{m.name:36s} {m.bug}  [{', '.join(map(short_test, m.tests))}]")
        return 0
    results: list[tuple[Mutation, str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="aca-mutate-") as folder:
        tree = Path(folder)
        copy_tree(tree)
        baseline = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        status, failed = run_tests(tree, baseline, False, args.timeout)
        if status != 0:
            print(f"error: the unmutated tests fail ({', '.join(failed) or f'status {status}'});"
                  " fix them first", file=sys.stderr)
            return 2
        for m in chosen:
            errors = anchor_errors(m, tree)
            if errors:
                results.append((m, "ERROR", "; ".join(errors), 0.0))
                print(f"ERROR     {m.name}: {'; '.join(errors)}", flush=True)
                continue
            originals = {edit.path: (tree / edit.path).read_text() for edit in m.edits}
            for edit in m.edits:
                path = tree / edit.path
                path.write_text(path.read_text().replace(edit.old, edit.new))
            began = time.perf_counter()
            try:
                status, failed = run_tests(tree, m.tests, args.fast, args.timeout)
            finally:
                for name, text in originals.items():
                    (tree / name).write_text(text)
            seconds = time.perf_counter() - began
            if status == 0:
                verdict, detail = "SURVIVED", f"no test in {', '.join(map(short_test, m.tests))}"
            elif status == -1:
                verdict, detail = "killed", f"timed out after {args.timeout:g} s"
            elif status == 1 and failed:
                more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
                verdict, detail = "killed", ", ".join(map(short_test, failed[:3])) + more
            else:
                verdict, detail = "ERROR", f"pytest exit status {status} (not a test failure)"
            results.append((m, verdict, detail, seconds))
            print(f"{verdict:9s} {m.name} ({seconds:.0f} s): {detail}", flush=True)
    killed = sum(verdict == "killed" for _, verdict, _, _ in results)
    survived = sum(verdict == "SURVIVED" for _, verdict, _, _ in results)
    errors = len(results) - killed - survived
    print("\n| mutation | bug | result | killed by |\n|---|---|---|---|")
    for m, verdict, detail, _ in results:
        print(f"| {m.name} | {m.bug} | {verdict} | {detail} |")
    print(f"\nscore: {killed} of {killed + survived} killed "
          f"({100 * killed / max(killed + survived, 1):.0f} %), {survived} survived, "
          f"{errors} error(s)")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
