"""Explicit Runge–Kutta methods as data: Butcher tableaus with embedded error
estimates. Adding a method is adding a tableau; the stepping code is shared."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ButcherTableau:
    """``c`` nodes, ``a`` the strictly lower-triangular rows (``a[i]`` has ``i``
    entries), ``b`` the weights of the propagated solution (of order ``order``),
    ``b_error`` the weights of the embedded error estimate ``b - b_hat`` (None for
    a fixed-step-only method). A method is FSAL when its last stage is evaluated
    at the new solution, so the next step reuses it as its first stage."""

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_error: tuple[float, ...] | None = None

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @property
    def fsal(self) -> bool:
        return (self.adaptive and self.c[-1] == 1.0 and self.b[-1] == 0.0
                and tuple(self.a[-1]) == tuple(self.b[:-1]))

    @property
    def solution_stages(self) -> int:
        """Stages needed for the new solution (an FSAL method's last stage only
        feeds the error estimate)."""
        return len(self.c) - 1 if self.fsal else len(self.c)


EULER = ButcherTableau("euler", c=(0.0,), a=((),), b=(1.0,), order=1)

MIDPOINT = ButcherTableau("midpoint", c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)

RK4 = ButcherTableau(
    "rk4",
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    order=4,
)

# Heun's method (order 2) with Euler (order 1) as the embedded estimate.
HEUN_EULER = ButcherTableau(
    "heun_euler", c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2, b_error=(-0.5, 0.5)
)

# Bogacki–Shampine 3(2).
BOSH3 = ButcherTableau(
    "bosh3",
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    order=3,
    b_error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
)

# Dormand–Prince 5(4).
DOPRI5 = ButcherTableau(
    "dopri5",
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    order=5,
    b_error=(
        35 / 384 - 1951 / 21600,
        0.0,
        500 / 1113 - 22642 / 50085,
        125 / 192 - 451 / 720,
        -2187 / 6784 + 12231 / 42400,
        11 / 84 - 649 / 6300,
        -1 / 60,
    ),
)

# Tsitouras 5(4) (Tsitouras 2011, "Runge–Kutta pairs of order 5(4) satisfying only
# the first column simplifying assumption").
_TSIT5_B = (
    0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
    -3.290069515436081, 2.324710524099774, 0.0,
)
TSIT5 = ButcherTableau(
    "tsit5",
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
         -0.028269050394068383),
        _TSIT5_B[:-1],
    ),
    b=_TSIT5_B,
    order=5,
    b_error=(
        -0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995,
        -0.1447110071732629, 0.5823571654525552, -0.45808210592918697, 1 / 66,
    ),
)

# Dormand–Prince 8(7) (Prince & Dormand 1981, as in torchdiffeq's dopri8).
_DOPRI8_B = (
    14005451 / 335480064, 0.0, 0.0, 0.0, 0.0, -59238493 / 1068277825, 181606767 / 758867731,
    561292985 / 797845732, -1041891430 / 1371343529, 760417239 / 1151165299,
    118820643 / 751138087, -528747749 / 2220607170, 1 / 4, 0.0,
)
_DOPRI8_B_HAT = (
    13451932 / 455176623, 0.0, 0.0, 0.0, 0.0, -808719846 / 976000145, 1757004468 / 5645159321,
    656045339 / 265891186, -3867574721 / 1518517206, 465885868 / 322736535,
    53011238 / 667516719, 2 / 45, 0.0, 0.0,
)
DOPRI8 = ButcherTableau(
    "dopri8",
    c=(0.0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200, 5490023248 / 9719169821,
       13 / 20, 1201146811 / 1299019798, 1.0, 1.0, 1.0),
    a=(
        (),
        (1 / 18,),
        (1 / 48, 1 / 16),
        (1 / 32, 0.0, 3 / 32),
        (5 / 16, 0.0, -75 / 64, 75 / 64),
        (3 / 80, 0.0, 0.0, 3 / 16, 3 / 20),
        (29443841 / 614563906, 0.0, 0.0, 77736538 / 692538347, -28693883 / 1125000000,
         23124283 / 1800000000),
        (16016141 / 946692911, 0.0, 0.0, 61564180 / 158732637, 22789713 / 633445777,
         545815736 / 2771057229, -180193667 / 1043307555),
        (39632708 / 573591083, 0.0, 0.0, -433636366 / 683701615, -421739975 / 2616292301,
         100302831 / 723423059, 790204164 / 839813087, 800635310 / 3783071287),
        (246121993 / 1340847787, 0.0, 0.0, -37695042795 / 15268766246, -309121744 / 1061227803,
         -12992083 / 490766935, 6005943493 / 2108947869, 393006217 / 1396673457,
         123872331 / 1001029789),
        (-1028468189 / 846180014, 0.0, 0.0, 8478235783 / 508512852, 1311729495 / 1432422823,
         -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
         -45442868181 / 3398467696, 3065993473 / 597172653),
        (185892177 / 718116043, 0.0, 0.0, -3185094517 / 667107341, -477755414 / 1098053517,
         -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563,
         -4093664535 / 808688257, 3962137247 / 1805957418, 65686358 / 487910083),
        (403863854 / 491063109, 0.0, 0.0, -5068492393 / 434740067, -411421997 / 543043805,
         652783627 / 914296604, 11173962825 / 925320556, -13158990841 / 6184727034,
         3936647629 / 1978049680, -160528059 / 685178525, 248638103 / 1413531060, 0.0),
        _DOPRI8_B[:-1],
    ),
    b=_DOPRI8_B,
    order=8,
    b_error=tuple(b - bh for b, bh in zip(_DOPRI8_B, _DOPRI8_B_HAT)),
)

_METHODS = (EULER, MIDPOINT, RK4, HEUN_EULER, BOSH3, DOPRI5, TSIT5, DOPRI8)
ALIASES = {"rk2": "midpoint", "rk12": "heun_euler", "adaptive_heun": "heun_euler",
           "rk23": "bosh3", "rk45": "dopri5"}

#: Every solver name and alias users may pass as ``solver=``.
SOLVERS: dict[str, ButcherTableau] = {m.name: m for m in _METHODS}
SOLVERS.update({alias: SOLVERS[name] for alias, name in ALIASES.items()})
