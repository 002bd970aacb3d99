"""Every figure: those a run draws into its own folder (toy, van der Pol, three-body, time
series) and the cross-run ones the summaries draw (CIFAR/digits, time-series methods,
three-body). Each takes plain numbers (lists, tensors) and a path, and saves through
:func:`aca.report.format.save_figure`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from aca.report.format import pyplot, save_figure
from aca.report.paper import VDP_REVERSE_X

MARKERS = ("o", "s", "^", "v")
METHOD_COLORS = {"aca": "tab:blue", "adjoint": "tab:orange", "naive": "tab:green"}
LINE_STYLES = ("-", "--", ":", "-.")
# Axis labels of the time-series tasks' figures: (time, value).
SERIES_AXES = {
    "mujoco": ("time (physics steps / 200)", "min-max scaled"),
    "sines": ("time (arbitrary units)", "arbitrary units"),
}
# Line style and marker of each method in the time-series comparison: with its colour and
# markers at different times, overlapping curves stay distinguishable.
SERIES_METHOD_STYLES = {"aca": ("--", "v"), "adjoint": (":", "s"), "naive": ("-.", "^")}
SERIES_MODEL_TITLES = {"latent_ode": "Latent ODE", "ode_rnn": "ODE-RNN"}


# ------------------------------------------------------------------------------ toy


def toy_error_vs_T(rows: list[dict], methods: list[str], path: Path, alpha: float,
                   z0: float) -> Path:
    """Absolute error of both gradients against T, one line per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, name in ((axes[0], "abs_err_z0", "dL/dz0"),
                            (axes[1], "abs_err_alpha", "dL/dα")):
        for method, marker in zip(methods, MARKERS, strict=False):
            picked = [row for row in rows if row["method"] == method]
            axis.semilogy([row["T"] for row in picked],
                          [max(row[key], 1e-300) for row in picked], marker=marker, ms=5,
                          alpha=0.8, label=method, color=METHOD_COLORS.get(method),
                          linestyle=LINE_STYLES[methods.index(method) % len(LINE_STYLES)])
        axis.set_xlabel("integration time T (dimensionless)")
        axis.set_ylabel(f"absolute error of {name}")
        axis.set_title(f"Error of {name} vs T")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    solver = rows[0]["solver"]
    fig.suptitle(f"Toy ODE dz/dt = αz, α={alpha:g}, z0={z0:g}; {solver}, "
                 f"rtol={rows[0]['rtol']:g}, atol={rows[0]['atol']:g}")
    return save_figure(fig, path)


def toy_paper_stack(stack_rows: list[dict], stacks: list[str], controlled_rows: list[dict],
                    path: Path, alpha: float, z0: float) -> Path:
    """Error of dL/dz0 against T: left the paper's stack (different dopri5s per method) with
    the paper's read-off points, right our controlled comparison (one solver for all)."""
    from aca.report.paper import TOY_ABS_ERROR, TOY_ACA_ERROR_VS_T, TOY_T

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for index, stack in enumerate(stacks):
        picked = [row for row in stack_rows if row["stack"] == stack]
        axes[0].semilogy([row["T"] for row in picked], [max(row["abs_err_z0"], 1e-300)
                                                        for row in picked],
                         marker=MARKERS[index % len(MARKERS)], ms=5, alpha=0.85,
                         linestyle=LINE_STYLES[index % len(LINE_STYLES)], label=stack,
                         color=("tab:purple" if stack.startswith("authors")
                                else METHOD_COLORS[picked[0]["as_method"]]))
    axes[0].plot(list(TOY_ACA_ERROR_VS_T), list(TOY_ACA_ERROR_VS_T.values()), "k*", ms=11,
                 label="paper, ACA (≈)")
    axes[0].plot([TOY_T] * 2, [TOY_ABS_ERROR["adjoint"], TOY_ABS_ERROR["naive"]], "kx", ms=9,
                 label="paper, adjoint / naive (≈)")
    axes[0].set_title("The paper's stack: a different dopri5 per method")
    methods = sorted({row["method"] for row in controlled_rows})
    for index, method in enumerate(methods):
        picked = [row for row in controlled_rows if row["method"] == method]
        axes[1].semilogy([row["T"] for row in picked], [max(row["abs_err_z0"], 1e-300)
                                                        for row in picked],
                         marker=MARKERS[index % len(MARKERS)], ms=5, alpha=0.85,
                         linestyle=LINE_STYLES[index % len(LINE_STYLES)],
                         color=METHOD_COLORS.get(method), label=method)
    axes[1].set_title(f"Controlled: one solver ({controlled_rows[0]['solver']}) for every method")
    for axis in axes:
        axis.set_xlabel("integration time T")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("absolute error of dL/dz0")
    fig.suptitle(f"Toy dz/dt = αz, α={alpha:g}, z0={z0:g}, rtol={stack_rows[0]['rtol']:g}, "
                 f"atol={stack_rows[0]['atol']:g}")
    return save_figure(fig, path)


def toy_error_vs_tol(rows: list[dict], methods: list[str], solvers: list[str], path: Path,
                     T: float) -> Path:
    """Relative error of both gradients against the tolerance, per method and solver."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = dict(zip(methods, ("tab:blue", "tab:orange", "tab:green", "tab:red"),
                      strict=False))
    styles = dict(zip(solvers, LINE_STYLES, strict=False))
    for axis, key, name in ((axes[0], "rel_err_z0", "dL/dz0"),
                            (axes[1], "rel_err_alpha", "dL/dα")):
        for solver in solvers:
            for method in methods:
                picked = [row for row in rows
                          if row["method"] == method and row["solver"] == solver]
                axis.loglog([row["rtol"] for row in picked],
                            [max(row[key], 1e-17) for row in picked], marker="o", ms=3,
                            color=colors[method], linestyle=styles[solver],
                            label=f"{method}, {solver}")
        axis.set_xlabel("rtol = atol")
        axis.set_ylabel(f"relative error of {name}")
        axis.set_title(f"Error of {name} vs tolerance (T={T:g})")
        axis.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


# ----------------------------------------------------------------------- van der Pol


def vdp_reconstruction(runs: dict[float, dict], reference: torch.Tensor, times: torch.Tensor,
                       path: Path, mu: float, solver: str) -> Path:
    """The forward trajectory and the reverse-time reconstructions, over time and in the
    phase plane; ``runs``: (rtol, atol) -> ``aca.tasks.vdp.reconstruction``'s result."""
    plt = pyplot()
    fig, (ax_time, ax_phase) = plt.subplots(1, 2, figsize=(15, 4.8),
                                            gridspec_kw={"width_ratios": [1.4, 1]})
    ax_time.plot(times.numpy(), reference[:, 0].numpy(), color="black", lw=2.5,
                 label="forward x(t) (reference solve)")
    ax_phase.plot(reference[:, 0].numpy(), reference[:, 1].numpy(), color="black", lw=2.5,
                  label="forward (reference solve)")
    for index, ((rtol, atol), run) in enumerate(runs.items()):
        reverse = run["reverse"].numpy()
        ending = (f"x_rev(0)={reverse[-1, 0]:.3g}" if math.isfinite(run["error"])
                  else f"blew up before t={run['times'][-1].item():.3g}")
        label = f"reverse, rtol={rtol:g}, atol={atol:g} ({ending})"
        style = LINE_STYLES[1 + index % (len(LINE_STYLES) - 1)]
        ax_time.plot(run["times"].numpy(), reverse[:, 0], style, lw=1.5, label=label)
        ax_phase.plot(reverse[:, 0], reverse[:, 1], style, lw=1.5, label=label)
    ax_time.plot([0.0], [VDP_REVERSE_X], "kX", ms=10, label="paper: x_rev(0) ≈ 0.5 (ode45)")
    ax_time.set_xlabel("time t (dimensionless)")
    ax_time.set_ylabel("x(t)")
    ax_time.set_title("Forward solve and reverse-time reconstruction")
    ax_phase.set_xlabel("x")
    ax_phase.set_ylabel("dx/dt")
    ax_phase.set_title("Phase plane (axes clipped to ±4)")
    ax_phase.plot([reference[0, 0].item()], [reference[0, 1].item()], "k*", ms=12,
                  label="y(0)")
    ax_time.set_ylim(-4, 4)
    ax_phase.set_xlim(-4, 4)
    ax_phase.set_ylim(-4, 4)
    for axis in (ax_time, ax_phase):
        axis.grid(True, alpha=0.3)
    ax_time.legend([ax_time.lines[-1]], [ax_time.lines[-1].get_label()], fontsize=7,
                   loc="lower right")
    ax_phase.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Van der Pol, μ={mu:g}: solve 0→T with {solver}, then T→0 from the end "
                 "state with the same solver and tolerance")
    return save_figure(fig, path)


def vdp_errors(rows: list[dict], solvers: list[str], methods: list[str], path: Path) -> Path:
    """Reverse-time error and each method's gradient error against the tolerance."""
    plt = pyplot()
    fig, (ax_rev, ax_grad) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = dict(zip(solvers, LINE_STYLES, strict=False))
    ceiling = 1e3

    def capped(values: list[float]) -> list[float]:
        return [min(max(value, 1e-16), ceiling) for value in values]

    for solver in solvers:
        picked = [row for row in rows if row["solver"] == solver]
        tols = [row["tol"] for row in picked]
        ax_rev.loglog(tols, capped([row["reverse_error"] for row in picked]), marker="o",
                      linestyle=styles[solver], label=solver)
        for method in methods:
            ax_grad.loglog(tols, capped([row[f"grad_rel_err_{method}"] for row in picked]),
                           marker="o", ms=3, linestyle=styles[solver],
                           color=METHOD_COLORS.get(method), label=f"{method}, {solver}")
    ax_rev.set_ylabel(f"|y_rev(0) - y(0)| (capped at {ceiling:g} = blew up)")
    ax_rev.set_title("Reverse-time reconstruction error at t=0")
    ax_grad.set_ylabel(f"relative error of d|y(T)|²/d(y0, μ) (capped at {ceiling:g} = failed)")
    ax_grad.set_title("Gradient error per method")
    for axis in (ax_rev, ax_grad):
        axis.set_xlabel("rtol = atol")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(fig, path)


def trajectory_fit(times: torch.Tensor, fitted: torch.Tensor, observed: torch.Tensor,
                   title: str, path: Path,
                   components: Sequence[tuple[int, str]] = ((0, "x(t)"),),
                   log_time: bool = False) -> Path:
    """Observed (points) and fitted (lines) ``components`` (index, label) of a few
    trajectories (``(trajectories, times, state)``), one panel per component; ``log_time``:
    a logarithmic time axis (the first time, 0, left out of it)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(components), figsize=(7 * len(components) ** 0.8, 4.5),
                             squeeze=False)
    shown = slice(1, None) if log_time else slice(None)
    for axis, (component, label) in zip(axes[0], components):
        for index in range(len(fitted)):
            line, = axis.plot(times[shown].numpy(), fitted[index, shown, component].numpy(),
                              lw=2, label=f"fitted, trajectory {index}")
            axis.plot(times[shown].numpy(), observed[index, shown, component].numpy(), ".",
                      color=line.get_color(), ms=3, label=f"observed, trajectory {index}")
        if log_time:
            axis.set_xscale("log")
        axis.set_xlabel("time t (dimensionless)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    return save_figure(fig, path)


# ------------------------------------------------------------------------ three-body


def three_body_orbits(runs: dict[str, dict], T_train: float, true_masses: tuple[float, ...],
                      path: Path) -> Path:
    """Per body, the x-y projection of the true orbit and each run's prediction
    (``runs``: label -> curves with ``times``, ``truth``, ``predicted``); the observed
    window ends at the marked point."""
    plt = pyplot()
    first = next(iter(runs.values()))
    times = torch.tensor(first["times"])
    truth = torch.tensor(first["truth"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for body, axis in enumerate(axes):
        columns = slice(3 * body, 3 * body + 2)
        axis.plot(*truth[:, columns].T.numpy(), color="black", lw=2.5, label="true orbit")
        boundary = int(torch.searchsorted(times, torch.tensor(T_train)).clamp(max=len(times) - 1))
        axis.plot(*truth[boundary, columns].numpy(), "k*", ms=12,
                  label=f"end of observed window t={T_train:g}")
        for name, run in runs.items():
            predicted = torch.tensor(run["predicted"])
            axis.plot(*predicted[:, columns].T.numpy(), "--", lw=1.5, label=f"predicted: {name}")
        axis.set_xlabel("x (length unit 5.326e12 m)")
        axis.set_ylabel("y (length unit 5.326e12 m)")
        axis.set_title(f"Body {body + 1} (true mass {true_masses[body]:g})")
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Three-body: true vs predicted positions on [0, {times[-1].item():g}] "
                 "(time unit 40.75 years), x-y projection")
    return save_figure(fig, path)


# ----------------------------------------------------------------------- time series


def series_prediction(arrays: dict[str, torch.Tensor], index: int, dims: list[int], title: str,
                      task: str, path: Path) -> Path:
    """True values, observed points and predictions of one series, one panel per dim."""
    plt = pyplot()
    time_label, value_label = SERIES_AXES[task]
    figure, axes = plt.subplots(len(dims), 1, figsize=(7, 2.2 * len(dims)), sharex=True,
                                squeeze=False)
    times = arrays["times"]
    for axis, dim in zip(axes[:, 0], dims, strict=True):
        exists = arrays["mask"][index, :, dim] > 0
        seen = arrays["observed"][index, :, dim] > 0
        axis.plot(times[exists], arrays["values"][index, exists, dim], "k-", label="true")
        axis.plot(times[seen], arrays["values"][index, seen, dim], "ko", ms=4, label="observed")
        axis.plot(times, arrays["predictions"][index, :, dim], "C1--", label="predicted")
        axis.set_ylabel(f"dim {dim} ({value_label})")
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel(time_label)
    return save_figure(figure, path)


def series_methods(columns: dict[str, list[tuple[str, float, dict[str, torch.Tensor]]]],
                   title: str, task: str, dims: list[int], series: list[int],
                   path: Path) -> Path:
    """A few test series: truth, observed points and every method's prediction, a row per
    (series, dim) and a column per model (``columns``: model -> [(method, test MSE,
    predictions of its run)]); ``title`` follows the model's name."""
    plt = pyplot()
    time_label, value_label = SERIES_AXES[task]
    panels = [(index, dim) for index in series for dim in dims]
    figure, axes = plt.subplots(len(panels), len(columns), figsize=(5.5 * len(columns),
                                2.2 * len(panels)), sharex=True, squeeze=False)
    for column, (model, runs) in enumerate(columns.items()):
        for axis, (index, dim) in zip(axes[:, column], panels, strict=True):
            first = runs[0][2]
            times = first["times"]
            exists = first["mask"][index, :, dim] > 0
            seen = first["observed"][index, :, dim] > 0
            axis.plot(times[exists], first["values"][index, exists, dim], "-", color="0.55",
                      lw=3, label="true")
            axis.plot(times[seen], first["values"][index, seen, dim], "ko", ms=4,
                      label="observed")
            every = max(1, len(times) // 8)
            for number, (method, mse, arrays) in enumerate(runs):
                style, marker = SERIES_METHOD_STYLES[method]
                axis.plot(arrays["times"], arrays["predictions"][index, :, dim], style,
                          color=METHOD_COLORS[method], marker=marker, ms=5, lw=1.5,
                          markevery=(number * every // len(runs), every),
                          label=f"{method} (test MSE {mse:.3g})")
            axis.set_ylabel(f"series {index}, dim {dim}\n({value_label})", fontsize=8)
        axes[0, column].set_title(f"{SERIES_MODEL_TITLES[model]}, {title}")
        axes[0, column].legend(fontsize=7, loc="best")
        axes[-1, column].set_xlabel(time_label)
    return save_figure(figure, path)


# -------------------------------------------------------------------- classification


def _time_axis(seconds: float) -> tuple[float, str]:
    if seconds > 2 * 3600:
        return 3600.0, "h"
    if seconds > 2 * 60:
        return 60.0, "min"
    return 1.0, "s"


def accuracy_curves(curves: list[tuple[str, list[float], list[float], list[float]]],
                    title: str, path: Path) -> Path:
    """Fig. 7a/b: test accuracy (%) against epoch and against cumulative training time;
    ``curves``: (label, epochs, seconds since the start, accuracy) per run."""
    plt = pyplot()
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    scale, unit = _time_axis(max(max(seconds, default=0.0) for _, _, seconds, _ in curves))
    for label, epochs, seconds, accuracy in curves:
        by_epoch.plot(epochs, accuracy, marker=".", label=label)
        by_time.plot([s / scale for s in seconds], accuracy, marker=".", label=label)
    by_epoch.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy vs epoch")
    by_time.set(xlabel=f"training wall time ({unit})", ylabel="test accuracy (%)",
                title="accuracy vs training time")
    for axis in (by_epoch, by_time):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    return save_figure(figure, path)


def accuracy_boxes(by_model: dict[str, list[float]], title: str, path: Path) -> Path:
    """Fig. 7c/d: box plot of the final test accuracy (%) of each model over seeds."""
    plt = pyplot()
    labels = sorted(by_model)
    figure, axis = plt.subplots(figsize=(5.5, 4.2))
    axis.boxplot([by_model[label] for label in labels], tick_labels=labels)
    for position, label in enumerate(labels, start=1):
        axis.scatter([position] * len(by_model[label]), by_model[label], s=12, alpha=0.6,
                     label="one seed" if position == 1 else None, color="black")
    seeds = "/".join(str(len(by_model[label])) for label in labels)
    axis.set(xlabel="model", ylabel="final test accuracy (%)",
             title=f"{title}: final accuracy over {seeds} seeds")
    axis.grid(alpha=0.3, axis="y")
    axis.legend()
    return save_figure(figure, path)
