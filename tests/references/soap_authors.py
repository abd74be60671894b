"""SOAP as the authors' code runs it (float64): github.com/nikhilvyas/SOAP,
``soap.py`` as released with Vyas et al. (2024), arXiv:2409.11321; what
``SOAP(paper_exact=True)`` runs. Per tensor, in the code's own order:

first call (no ``Q`` yet):
    GG[i] = lerp(GG[i], G^(i), 1 - shampoo_beta)       (GG starts at 0)
    Q[i] = eigh(GG[i]) eigenvectors, flipped (largest eigenvalue first)
    -- no parameter update, exp_avg and exp_avg_sq untouched, step = 0
every later call:
    G' = project(G)                                     (G x_i Q_i^T over preconditioned i)
    step += 1
    exp_avg = beta1 exp_avg + (1 - beta1) G             (original space)
    exp_avg_sq = beta2 exp_avg_sq + (1 - beta2) G'^2
    denom = sqrt(exp_avg_sq) + eps
    step_size = lr sqrt(1 - beta2^step) / (1 - beta1^step)    (correct_bias=True)
    W -= step_size project_back(project(exp_avg) / denom)
    GG[i] = lerp(GG[i], G^(i), 1 - shampoo_beta)
    if step % precondition_frequency == 0, per preconditioned i (get_orthogonal_matrix_QR):
        est_eig = diag(Q^T GG Q); sort_idx = argsort(est_eig, descending)
        exp_avg_sq = exp_avg_sq[sort_idx along i]; Q = Q[:, sort_idx]
        Q = qr(GG Q)[0]

G^(i) is G contracted with itself over every dimension but i. 1-D tensors
and dimensions above max_precond_dim are not preconditioned
(precondition_1d=False, merge_dims=False, normalize_grads=False; no weight
decay here). ``project`` contracts dimension 0 with Q_i's rows one
dimension at a time (cycling the dimensions), ``project_back`` with its
columns, as the code's ``tensordot`` loop does.
"""
import numpy as np


def init_state(param, *, max_preconditioner_dim=8192, **_):
    shape = param.shape
    preconditioned = len(shape) >= 2
    return {
        "step": 0,
        "exp_avg": np.zeros(shape),
        "exp_avg_sq": np.zeros(shape),
        "GG": [np.zeros((n, n)) if preconditioned and n <= max_preconditioner_dim else None
               for n in shape],
        "Q": None,
    }


def _gram(g, i):
    others = [a for a in range(g.ndim) if a != i]
    return np.tensordot(g, g, axes=(others, others))


def _project(x, qs, back):
    for q in qs:
        if q is None:
            x = np.moveaxis(x, 0, -1)
        else:
            x = np.tensordot(x, q, axes=([0], [1 if back else 0]))
    return x


def _update_preconditioner(g, state, shampoo_beta, precondition_frequency):
    for i, gg in enumerate(state["GG"]):
        if gg is not None:
            state["GG"][i] = gg + (1.0 - shampoo_beta) * (_gram(g, i) - gg)  # torch.lerp_
    if state["Q"] is None:
        state["Q"] = []
        for gg in state["GG"]:
            if gg is None:
                state["Q"].append(None)
            else:
                _, vectors = np.linalg.eigh(gg)
                state["Q"].append(vectors[:, ::-1])
    if state["step"] > 0 and state["step"] % precondition_frequency == 0:
        for i, (gg, q) in enumerate(zip(state["GG"], state["Q"])):
            if gg is None:
                continue
            est_eig = np.diag(q.T @ gg @ q)
            sort_idx = np.argsort(-est_eig, kind="stable")
            state["reorders"] = state.get("reorders", 0) + int(np.any(sort_idx != np.arange(len(q))))
            state["exp_avg_sq"] = np.take(state["exp_avg_sq"], sort_idx, axis=i)
            state["Q"][i], _ = np.linalg.qr(gg @ q[:, sort_idx])


def update(param, grad, state, t, learning_rate, *, beta_1=0.95, beta_2=0.95, epsilon=1e-8,
           shampoo_beta=0.95, precondition_frequency=10, **_):
    """The parameter after the t-th call (1-based). Mutates state."""
    w = np.asarray(param, np.float64)
    g = np.asarray(grad, np.float64)
    if g.ndim < 2:
        state["GG"] = [None] * g.ndim
    if state["Q"] is None:
        _update_preconditioner(g, state, shampoo_beta, precondition_frequency)
        return w
    qs = state["Q"]
    g_projected = _project(g, qs, back=False)
    state["step"] += 1
    state["exp_avg"] = beta_1 * state["exp_avg"] + (1.0 - beta_1) * g
    state["exp_avg_sq"] = beta_2 * state["exp_avg_sq"] + (1.0 - beta_2) * g_projected**2
    denom = np.sqrt(state["exp_avg_sq"]) + epsilon
    exp_avg_projected = _project(state["exp_avg"], qs, back=False)
    step = state["step"]
    step_size = learning_rate * np.sqrt(1.0 - beta_2**step) / (1.0 - beta_1**step)
    w = w - step_size * _project(exp_avg_projected / denom, qs, back=True)
    _update_preconditioner(g, state, shampoo_beta, precondition_frequency)
    return w
