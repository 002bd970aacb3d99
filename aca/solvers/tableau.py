"""Explicit Runge–Kutta methods as data: Butcher tableaus with embedded error
estimates and continuous extensions (dense output). Adding a method is adding a
tableau; the stepping code is shared."""

from __future__ import annotations

from dataclasses import dataclass, replace

Polynomials = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class ButcherTableau:
    """``c`` nodes, ``a`` the strictly lower-triangular rows (``a[i]`` has ``i``
    entries), ``b`` the weights of the propagated solution (of order ``order``),
    ``b_error`` the weights of the embedded error estimate ``b - b_hat`` (None for
    a fixed-step-only method). A method is FSAL when its last stage is evaluated
    at the new solution, so the next step reuses it as its first stage.

    ``diagonal`` makes the method diagonally implicit (ESDIRK/SDIRK): stage ``i`` solves
    ``z_i = y + h Σ_{j<i} a_ij k_j + h diagonal[i] f(t + c_i h, z_i)`` (by Newton's
    method, ``aca.solvers.newton``); empty for an explicit method.

    ``dense`` is the continuous extension, of order ``dense_order``: inside a step,
    ``y(t + θh) = y + h Σ_j b_j(θ) k_j`` with ``b_j(θ) = Σ_m dense[j][m] θ^(m+1)``,
    one row per stage (an FSAL method's last stage included), and ``b_j(1) = b_j``."""

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_error: tuple[float, ...] | None = None
    dense: Polynomials = ()
    dense_order: int = 0
    diagonal: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        """The tableau checks itself: shapes, row sums of ``a`` equal to ``c``, weights
        summing to 1, error weights to 0, and a continuous extension that ends at the
        step's solution (so a typo in a coefficient fails at import, not in a result)."""
        stages = len(self.c)
        if len(self.a) != stages or len(self.b) != stages or any(
                len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"{self.name}: a must have rows of 0..{stages - 1} entries and b "
                             f"{stages} weights")
        if self.diagonal and len(self.diagonal) != stages:
            raise ValueError(f"{self.name}: the diagonal must have {stages} entries")
        for i, (row, node) in enumerate(zip(self.a, self.c)):
            full = (*row, self.diagonal[i]) if self.diagonal else row
            if not _close(sum(full), node, full):
                raise ValueError(f"{self.name}: row {i} of a sums to {sum(full)}, not c_{i}={node}")
        if not _close(sum(self.b), 1.0, self.b):
            raise ValueError(f"{self.name}: the weights b sum to {sum(self.b)}, not 1")
        if self.b_error is not None and (len(self.b_error) != stages
                                         or not _close(sum(self.b_error), 0.0, self.b_error)):
            raise ValueError(f"{self.name}: the error weights must be {stages} numbers summing "
                             f"to 0, got {self.b_error}")
        if len(self.dense) != stages or self.dense_order < 1:
            raise ValueError(f"{self.name}: dense output needs one polynomial per stage")
        for j, (row, weight) in enumerate(zip(self.dense, self.b)):
            if abs(sum(row) - weight) > 1e-14 * sum(map(abs, row)) + 1e-16:
                raise ValueError(f"{self.name}: dense output b_{j}(1) = {sum(row)} != b_{j}")

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @property
    def implicit(self) -> bool:
        return any(self.diagonal)

    @property
    def fsal(self) -> bool:
        return (self.adaptive and not self.implicit and self.c[-1] == 1.0 and self.b[-1] == 0.0
                and tuple(self.a[-1]) == tuple(self.b[:-1]))

    @property
    def solution_stages(self) -> int:
        """Stages needed for the new solution (an FSAL method's last stage only
        feeds the error estimate)."""
        return len(self.c) - 1 if self.fsal else len(self.c)


def _close(total: float, expected: float, terms: tuple[float, ...]) -> bool:
    return abs(total - expected) <= 1e-12 * (1.0 + sum(map(abs, terms)))


def hermite(b: tuple[float, ...]) -> Polynomials:
    """The cubic Hermite interpolant of an FSAL method's step (order 3): the values
    ``y`` and ``y + h Σ b_j k_j`` and the slopes ``k_1 = f(t, y)`` and the last stage
    ``f(t + h, y_new)``, as stage polynomials (no evaluation beyond the step's own)."""
    start, end = (1.0, -2.0, 1.0), (0.0, -1.0, 1.0)  # θ - 2θ² + θ³, -θ² + θ³
    rows = [[weight * x for x in (0.0, 3.0, -2.0)] for weight in b]  # b_j (3θ² - 2θ³)
    rows[0] = [r + x for r, x in zip(rows[0], start)]
    rows[-1] = [r + x for r, x in zip(rows[-1], end)]
    return tuple(tuple(row) for row in rows)


# Methods without an FSAL stage use their stages' own ("free") continuous extension
# of the method's order (rk4: 3), since a Hermite interpolant would need f at the
# step's end, an evaluation they do not make.
EULER = ButcherTableau("euler", c=(0.0,), a=((),), b=(1.0,), order=1, dense=((1.0,),),
                       dense_order=1)

MIDPOINT = ButcherTableau("midpoint", c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2,
                          dense=((1.0, -1.0), (0.0, 1.0)), dense_order=2)

RK4 = ButcherTableau(
    "rk4",
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    order=4,
    dense=((1.0, -3 / 2, 2 / 3), (0.0, 1.0, -2 / 3), (0.0, 1.0, -2 / 3), (0.0, -1 / 2, 2 / 3)),
    dense_order=3,
)

# Heun's method (order 2) with Euler (order 1) as the embedded estimate.
HEUN_EULER = ButcherTableau(
    "heun_euler", c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2, b_error=(-0.5, 0.5),
    dense=((1.0, -0.5), (0.0, 0.5)), dense_order=2,
)

# Bogacki–Shampine 3(2); its continuous extension is the cubic Hermite.
_BOSH3_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
BOSH3 = ButcherTableau(
    "bosh3",
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), _BOSH3_B[:-1]),
    b=_BOSH3_B,
    order=3,
    b_error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    dense=hermite(_BOSH3_B),
    dense_order=3,
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
    # Shampine's (1986) quartic dense output, as in scipy's RK45 (Hairer's DOPRI5 too)
    dense=(
        (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
        (0.0, 0.0, 0.0, 0.0),
        (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933,
         87487479700 / 32700410799),
        (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
        (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408,
         701980252875 / 199316789632),
        (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
        (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
    ),
    dense_order=4,
)

# Dormand–Prince 5(4) with the classical embedded weights of Dormand & Prince (1980),
# b_hat = (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40), as the
# authors' ACA code (torch_ACA, TorchDiffEqPack) uses; ``dopri5`` has torchdiffeq's
# weights. Same steps' solution and dense output, another error estimate.
DOPRI5_CLASSIC = replace(
    DOPRI5,
    name="dopri5_classic",
    b_error=(
        35 / 384 - 5179 / 57600,
        0.0,
        500 / 1113 - 7571 / 16695,
        125 / 192 - 393 / 640,
        -2187 / 6784 + 92097 / 339200,
        11 / 84 - 187 / 2100,
        -1 / 40,
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
    # Tsitouras's own quartic interpolant (the paper's b_j(θ), multiplied out)
    dense=(
        (1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216),
        (0.0, 0.1317, -0.2234, 0.1017),
        (0.0, 3.930296236894751, -5.941033872131505, 2.490627285651253),
        (0.0, -12.411077166933676, 30.338188630282318, -16.548102889244902),
        (0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928),
        (0.0, -27.896526289197286, 65.09189467479368, -34.87065786149661),
        (0.0, 1.5, -4.0, 2.5),
    ),
    dense_order=4,
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
    # the stage polynomials torchdiffeq's dopri8 evaluates at θ = 1/2 only (for its
    # quartic fit): used whole they satisfy the order conditions through order 5
    dense=(
        (1.0, -6.6910181737837595697, 19.9990069333683970610, -30.0610568289666450593,
         22.1396504998094068976, -6.3448349392860401388),
        *((0.0,) * 6,) * 4,
        (0.0, -7.6142658045872677172, 52.2273532792945524050, -121.4999627731334642623,
         116.4422149550342161651, -39.6107919852202505218),
        (0.0, 10.7281392630428866124, -46.8919164181093621583, 83.1721004639847717481,
         -67.1451318825957197185, 20.3761213808791436958),
        (0.0, 0.5526637063753648783, -0.1890893225010595467, 9.5724507555993664382,
         -16.5672243527496524646, 7.3347098826795362023),
        (0.0, 4.2186562625665153803, -35.7075975946222072821, 87.8406057677205645007,
         -89.9916014847245016028, 32.8801774352459155182),
        (0.0, -0.6627209125361597559, 6.2736448083240352160, -17.4152107770762969005,
         22.6237489648532849093, -10.1588990526426760954),
        (0.0, -1.2636789001135462218, 10.3160881272450748458, -28.5903289514790976966,
         32.2362340167355370113, -12.5401268098782561200),
        (0.0, 5.4106037898590422230, -34.7650769866611817349, 81.6630950584341412934,
         -82.1020315488359848644, 29.5553001484516038033),
        (0.0, -7.0321379067945741781, 47.7457971078225540396, -114.9375291377009418170,
         116.2662185791119533462, -41.7923486424390588923),
        (0.0, 2.3537586759714983486, -19.0082099341608028453, 50.2558364226176017553,
         -53.9020777466385396792, 20.3006925822100825485),
    ),
    dense_order=5,
)

# Heun's second-order method (explicit trapezoidal rule) on a fixed grid.
HEUN2 = ButcherTableau("heun2", c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2,
                       dense=((1.0, -0.5), (0.0, 0.5)), dense_order=2)

# Heun's third-order method (Heun 1900; Hairer, Nørsett & Wanner, Table II.1.1).
HEUN3 = ButcherTableau(
    "heun3", c=(0.0, 1 / 3, 2 / 3), a=((), (1 / 3,), (0.0, 2 / 3)), b=(0.25, 0.0, 0.75), order=3,
    dense=((1.0, -0.75), (0.0, 0.0), (0.0, 0.75)), dense_order=2,
)

# Kutta's 3/8 rule (Kutta 1901; Hairer, Nørsett & Wanner, Table II.1.2): torchdiffeq's rk4.
RK4_38 = ButcherTableau(
    "rk4_38",
    c=(0.0, 1 / 3, 2 / 3, 1.0),
    a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
    b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    order=4,
    # the free extension of order 3: the four third-order conditions solved for b_j(θ)
    dense=((1.0, -15 / 8, 1.0), (0.0, 15 / 8, -3 / 2), (0.0, 3 / 8, 0.0), (0.0, -3 / 8, 1 / 2)),
    dense_order=3,
)

# Fehlberg's RK1(2) (Fehlberg 1969, NASA TR R-315), propagating the second-order
# solution; its first-order solution is the last stage's argument.
FEHLBERG2 = ButcherTableau(
    "fehlberg2",
    c=(0.0, 0.5, 1.0),
    a=((), (0.5,), (1 / 256, 255 / 256)),
    b=(1 / 512, 255 / 256, 1 / 512),
    order=2,
    b_error=(1 / 512 - 1 / 256, 0.0, 1 / 512),
    dense=((1.0, 1 / 512 - 1), (0.0, 255 / 256), (0.0, 1 / 512)), dense_order=2,
)

# Diagonally implicit methods for stiff problems. Implicit Euler (fixed steps, order 1,
# L-stable), for tests and as the simplest stiff method.
IMPLICIT_EULER = ButcherTableau("implicit_euler", c=(1.0,), a=((),), b=(1.0,), order=1,
                                dense=((1.0,),), dense_order=1, diagonal=(1.0,))

# Kværnø's ESDIRK 3(2) and 5(4) (Kværnø 2004, "Singly diagonally implicit Runge–Kutta
# methods with an explicit first stage"; the coefficients as in diffrax's Kvaerno3/5):
# L-stable and stiffly accurate (b is the last row of a, the new state the last stage),
# with the cubic Hermite interpolant as continuous extension (as diffrax).
_G3 = 0.43586652150
_KVAERNO3_LAST = ((6 * _G3 - 1) / (12 * _G3), -1 / ((24 * _G3 - 12) * _G3),
                  (-6 * _G3**2 + 6 * _G3 - 1) / (6 * _G3 - 3))
_KVAERNO3_HAT = ((-4 * _G3**2 + 6 * _G3 - 1) / (4 * _G3), (-2 * _G3 + 1) / (4 * _G3), _G3)
_KVAERNO3_B = (*_KVAERNO3_LAST, _G3)
KVAERNO3 = ButcherTableau(
    "kvaerno3",
    c=(0.0, 2 * _G3, 1.0, 1.0),
    a=((), (_G3,), _KVAERNO3_HAT[:2], _KVAERNO3_LAST),
    b=_KVAERNO3_B,
    order=3,
    b_error=tuple(b - bh for b, bh in zip(_KVAERNO3_B, (*_KVAERNO3_HAT, 0.0))),
    dense=hermite(_KVAERNO3_B),
    dense_order=3,
    diagonal=(0.0, _G3, _G3, _G3),
)

_G5 = 0.26
_KVAERNO5_A = (
    (),
    (_G5,),
    (0.13, 0.84033320996790809),
    (0.22371961478320505, 0.47675532319799699, -0.06470895363112615),
    (0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998),
    (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141,
     0.61943039072480676),
    (0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046,
     0.62993304899016403, 0.06962479448202728),
)
_KVAERNO5_B = (*_KVAERNO5_A[-1], _G5)
KVAERNO5 = ButcherTableau(
    "kvaerno5",
    c=(0.0, 0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0),
    a=_KVAERNO5_A,
    b=_KVAERNO5_B,
    order=5,
    b_error=tuple(b - bh for b, bh in zip(_KVAERNO5_B, (*_KVAERNO5_A[-2], _G5, 0.0))),
    dense=hermite(_KVAERNO5_B),
    dense_order=3,
    diagonal=(0.0, *(_G5,) * 6),
)

_METHODS = (EULER, MIDPOINT, RK4, HEUN_EULER, BOSH3, DOPRI5, DOPRI5_CLASSIC, TSIT5, DOPRI8,
            HEUN2, HEUN3, RK4_38, FEHLBERG2, IMPLICIT_EULER, KVAERNO3, KVAERNO5)
ALIASES = {"rk2": "midpoint", "rk12": "heun_euler", "adaptive_heun": "heun_euler",
           "rk23": "bosh3", "rk45": "dopri5"}

#: Every solver name and alias users may pass as ``solver=``.
SOLVERS: dict[str, ButcherTableau] = {m.name: m for m in _METHODS}
SOLVERS.update({alias: SOLVERS[name] for alias, name in ALIASES.items()})
