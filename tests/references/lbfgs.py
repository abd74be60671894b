"""L-BFGS with a strong-Wolfe line search, in NumPy, from Nocedal and Wright.

Numerical Optimization (2nd ed.): Algorithm 7.4 (two-loop recursion),
Algorithm 3.5 (line search: bracketing), Algorithm 3.6 (zoom), eq. (3.59)
(cubic interpolation); safeguards as in PyTorch's ``torch.optim.LBFGS``
(extrapolation into ``[t + 0.01 (t - t_prev), 10 t]``, trials kept 10 % away
from the bracket ends after insufficient progress). One ``step`` is one
L-BFGS iteration, as in ``keras_optsuite.optimizers.LBFGS``.

``dense_inverse_hessian`` builds the same ``H`` as an explicit matrix by the
BFGS update (N&W eq. 7.19 applied to ``H0 = gamma I``), to check the
two-loop recursion independently.
"""

from __future__ import annotations

import numpy as np


def two_loop_direction(g, pairs):
    """``-H g`` for the pairs ``[(s, y), ...]`` oldest first (Algorithm 7.4)."""
    if not pairs:
        return -g
    q = g.copy()
    alphas = []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (y @ s)
        alphas.append(alpha)
        q = q - alpha * y
    s, y = pairs[-1]
    r = (s @ y) / (y @ y) * q
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        beta = (y @ r) / (y @ s)
        r = r + s * (alpha - beta)
    return -r


def dense_inverse_hessian(pairs, n):
    """``H`` from ``H0 = (s.y / y.y) I`` (newest pair) and the BFGS update, oldest first."""
    s, y = pairs[-1]
    h = (s @ y) / (y @ y) * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (y @ s)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return h


def cubic_minimizer(x1, f1, g1, x2, f2, g2, low, high):
    """N&W eq. (3.59), clipped to ``[low, high]``; the midpoint if there is no minimizer."""
    with np.errstate(all="ignore"):
        d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
        d2_square = d1 * d1 - g1 * g2
        if d2_square >= 0.0:
            d2 = np.sqrt(d2_square)
            if x1 <= x2:
                t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
            else:
                t = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
            if np.isfinite(t):
                return min(max(t, low), high)
    return 0.5 * (low + high)


def strong_wolfe(phi, f0, gtd0, t, c1, c2, max_evaluations, tolerance_change, direction_max):
    """Step length satisfying the strong-Wolfe conditions along a direction.

    ``phi(t) -> (f, g, g.d)`` at ``x + t d``. Returns ``(t, f, g, evaluations)``
    of the accepted point, or of the best sufficient-decrease point (``t = 0``
    for none) when ``max_evaluations`` run out.
    """
    evaluations = 0
    prev = (0.0, f0, gtd0, None)  # t, f, g.d, g
    # Algorithm 3.5.
    while True:
        f, g, gtd = phi(t)
        evaluations += 1
        if f > f0 + c1 * t * gtd0 or f >= prev[1]:
            lo, hi = prev, (t, f, gtd, g)
            break
        if abs(gtd) <= -c2 * gtd0:
            return t, f, g, evaluations
        if gtd >= 0.0:
            lo, hi = (t, f, gtd, g), prev
            break
        if evaluations == max_evaluations:
            return t, f, g, evaluations
        t_next = cubic_minimizer(prev[0], prev[1], prev[2], t, f, gtd,
                                 t + 0.01 * (t - prev[0]), 10.0 * t)
        prev = (t, f, gtd, g)
        t = t_next
    # Algorithm 3.6.
    insufficient_progress = False
    while evaluations < max_evaluations:
        low, high = min(lo[0], hi[0]), max(lo[0], hi[0])
        if (high - low) * direction_max < tolerance_change:
            break
        t = cubic_minimizer(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2], low, high)
        margin = 0.1 * (high - low)
        if min(high - t, t - low) < margin:
            if insufficient_progress or t >= high or t <= low:
                t = high - margin if abs(t - high) < abs(t - low) else low + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        f, g, gtd = phi(t)
        evaluations += 1
        if f > f0 + c1 * t * gtd0 or f >= lo[1]:
            hi = (t, f, gtd, g)
        else:
            if abs(gtd) <= -c2 * gtd0:
                return t, f, g, evaluations
            if gtd * (hi[0] - lo[0]) >= 0.0:
                hi = lo
            lo = (t, f, gtd, g)
    return lo[0], lo[1], lo[3], evaluations


class LBFGS:
    """``step(x, loss_and_gradient) -> x``; ``accepted`` records each iteration's line search."""

    def __init__(self, learning_rate=1.0, history_size=10, max_iterations=1, max_evaluations=25,
                 tolerance_grad=1e-7, tolerance_change=1e-9, line_search="strong_wolfe",
                 c1=1e-4, c2=0.9):
        self.learning_rate = learning_rate
        self.history_size = history_size
        self.max_iterations = max_iterations
        self.max_evaluations = max_evaluations
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change
        self.line_search = line_search
        self.c1, self.c2 = c1, c2
        self.pairs = []  # (s, y), oldest first
        self.accepted = []  # (t, evaluations) per iteration
        self.steps = 0

    def step(self, x, loss_and_gradient):
        """One optimizer step: up to ``max_iterations`` iterations on one objective."""
        # A schedule is read with the number of completed steps, as Keras does.
        lr = self.learning_rate(self.steps) if callable(self.learning_rate) else self.learning_rate
        self.steps += 1
        x = np.asarray(x, np.float64)
        f, g = loss_and_gradient(x)
        for _ in range(self.max_iterations):
            if np.max(np.abs(g)) <= self.tolerance_grad:
                break
            d = two_loop_direction(g, self.pairs)
            gtd = g @ d
            if gtd > -self.tolerance_change:  # not a descent direction: restart
                self.pairs = []
                d, gtd = -g, -(g @ g)
            t = lr if self.pairs else lr * min(1.0, 1.0 / np.sum(np.abs(g)))

            def phi(step_length, x=x, d=d):
                f_trial, g_trial = loss_and_gradient(x + step_length * d)
                return f_trial, g_trial, g_trial @ d

            if self.line_search is None:
                f_new, g_new, _ = phi(t)
                evaluations = 1
            else:
                t, f_new, g_new, evaluations = strong_wolfe(
                    phi, f, gtd, t, self.c1, self.c2, self.max_evaluations,
                    self.tolerance_change, np.max(np.abs(d)),
                )
                if g_new is None:  # nothing better than the start
                    g_new = g
            self.accepted.append((t, evaluations))
            s, y = t * d, g_new - g
            if y @ s > 1e-10:
                self.pairs = (self.pairs + [(s, y)])[-self.history_size:]
            x = x + s
            progressed = (t > 0.0 and np.max(np.abs(s)) > self.tolerance_change
                          and abs(f_new - f) >= self.tolerance_change)
            f, g = f_new, g_new
            if not progressed:
                break
        return x
