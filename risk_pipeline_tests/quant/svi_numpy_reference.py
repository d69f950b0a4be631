"""The numpy path of SVI's batched inner problem, the reference the compiled ``svi._batched_inner_kernel`` is tested
against bit for bit (it was the production path before the kernel; the package no longer calls it)."""

from __future__ import annotations

import numpy as np

from risk_pipeline.quant.svi import MAX_WING_SLOPE, FloatArray, _Batch


def batched_box_lsq(gram: FloatArray, rhs: FloatArray, hi: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``_box_lsq`` for a batch: minimizers of ``x' G x - 2 h' x`` over ``0 <= x <= hi`` and the values.

    ``gram`` has shape ``(..., 3, 3)``, ``rhs`` and ``hi`` ``(..., 3)``. All 27 faces of the box are
    solved at once in closed form (free variables from the face's 3 x 3, 2 x 2 or 1 x 1 linear
    system by Cramer's rule, fixed ones at a bound) and the best feasible candidate is kept; the
    eight vertices are always feasible.
    """
    g = [[gram[..., i, j] for j in range(3)] for i in range(3)]
    h = [rhs[..., i] for i in range(3)]
    bounds = [(np.zeros_like(hi[..., i]), hi[..., i]) for i in range(3)]
    tiny = 1e-300
    cands: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    # interior: G x = h
    det = (
        g[0][0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1])
        - g[0][1] * (g[1][0] * g[2][2] - g[1][2] * g[2][0])
        + g[0][2] * (g[1][0] * g[2][1] - g[1][1] * g[2][0])
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_det = 1.0 / np.where(np.abs(det) > tiny, det, np.nan)
        x0 = (
            h[0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1])
            - g[0][1] * (h[1] * g[2][2] - g[1][2] * h[2])
            + g[0][2] * (h[1] * g[2][1] - g[1][1] * h[2])
        ) * inv_det
        x1 = (
            g[0][0] * (h[1] * g[2][2] - g[1][2] * h[2])
            - h[0] * (g[1][0] * g[2][2] - g[1][2] * g[2][0])
            + g[0][2] * (g[1][0] * h[2] - h[1] * g[2][0])
        ) * inv_det
        x2 = (
            g[0][0] * (g[1][1] * h[2] - h[1] * g[2][1])
            - g[0][1] * (g[1][0] * h[2] - h[1] * g[2][0])
            + h[0] * (g[1][0] * g[2][1] - g[1][1] * g[2][0])
        ) * inv_det
        cands.append((x0, x1, x2))
        # one variable at a bound, two free
        for fixed in range(3):
            i, j = (n for n in range(3) if n != fixed)
            det2 = g[i][i] * g[j][j] - g[i][j] * g[j][i]
            inv2 = 1.0 / np.where(np.abs(det2) > tiny, det2, np.nan)
            for c in bounds[fixed]:
                ri = h[i] - g[i][fixed] * c
                rj = h[j] - g[j][fixed] * c
                x = [c, c, c]
                x[i] = (ri * g[j][j] - g[i][j] * rj) * inv2
                x[j] = (g[i][i] * rj - g[j][i] * ri) * inv2
                x[fixed] = c
                cands.append((x[0], x[1], x[2]))
        # two at a bound, one free
        for free in range(3):
            i, j = (n for n in range(3) if n != free)
            inv1 = 1.0 / np.where(np.abs(g[free][free]) > tiny, g[free][free], np.nan)
            for ci in bounds[i]:
                for cj in bounds[j]:
                    x = [ci, ci, ci]
                    x[i], x[j] = ci, cj
                    x[free] = (h[free] - g[free][i] * ci - g[free][j] * cj) * inv1
                    cands.append((x[0], x[1], x[2]))
    # vertices
    for c0 in bounds[0]:
        for c1 in bounds[1]:
            for c2 in bounds[2]:
                cands.append((c0, c1, c2))
    x0, x1, x2 = (np.stack([np.broadcast_to(c[n], det.shape) for c in cands], axis=-1) for n in range(3))
    hi0, hi1, hi2 = (hi[..., n, None] for n in range(3))
    tol = 1e-12
    with np.errstate(invalid="ignore"):  # NaN (singular face) is infeasible
        feasible = (
            (x0 >= -tol * (1.0 + hi0))
            & (x0 <= hi0 * (1.0 + tol) + tol)
            & (x1 >= -tol * (1.0 + hi1))
            & (x1 <= hi1 * (1.0 + tol) + tol)
            & (x2 >= -tol * (1.0 + hi2))
            & (x2 <= hi2 * (1.0 + tol) + tol)
        )
    x0 = np.clip(np.where(feasible, x0, 0.0), 0.0, hi0)
    x1 = np.clip(np.where(feasible, x1, 0.0), 0.0, hi1)
    x2 = np.clip(np.where(feasible, x2, 0.0), 0.0, hi2)
    e = [[gram[..., i, j, None] for j in range(3)] for i in range(3)]
    values = (
        x0 * (e[0][0] * x0 + 2.0 * (e[0][1] * x1 + e[0][2] * x2 - rhs[..., 0, None]))
        + x1 * (e[1][1] * x1 + 2.0 * (e[1][2] * x2 - rhs[..., 1, None]))
        + x2 * (e[2][2] * x2 - 2.0 * rhs[..., 2, None])
    )
    values = np.where(feasible, values, np.inf)
    best = np.argmin(values, axis=-1)[..., None]
    x_best = np.stack([np.take_along_axis(c, best, axis=-1)[..., 0] for c in (x0, x1, x2)], axis=-1)
    return x_best, np.take_along_axis(values, best, axis=-1)[..., 0]


def batched_inner_numpy(batch: _Batch, m: FloatArray, sigma: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``_inner_fit`` for every slice and candidate: ``(a, u, v)`` of shape ``(S, C, 3)`` and errors ``(S, C)``
    (numpy; the reference of ``svi._batched_inner``)."""
    y = (batch.k[:, None, :] - m[..., None]) / sigma[..., None]  # (S, C, N)
    z = np.sqrt(y * y + 1.0)
    p, q = 0.5 * (z + y), 0.5 * (z - y)  # p q = 1/4
    wt = batch.weights[:, None, :]
    target = (batch.w / batch.scale[:, None])[:, None, :]  # (S, 1, N)
    inv = (1.0 / batch.scale)[:, None]
    wp, wq = wt * p, wt * q
    s_1 = np.ones_like(sigma)  # the weights sum to one
    s_p, s_q = wp.sum(axis=-1), wq.sum(axis=-1)
    s_pp, s_qq = (wp * p).sum(axis=-1), (wq * q).sum(axis=-1)
    s_pq = np.broadcast_to(0.25, sigma.shape)
    gram = (
        np.stack((np.stack((s_1, s_p, s_q), -1), np.stack((s_p, s_pp, s_pq), -1), np.stack((s_q, s_pq, s_qq), -1)), -2)
        * (inv * inv)[..., None, None]
    )
    wtt = wt * target
    rhs = np.stack((np.broadcast_to(wtt.sum(axis=-1), sigma.shape), (wtt * p).sum(axis=-1), (wtt * q).sum(axis=-1)), -1)
    rhs = rhs * inv[..., None]
    const = np.sum(batch.weights * (batch.w / batch.scale[:, None]) ** 2, axis=1)[:, None]  # (S, 1)
    upper_uv = MAX_WING_SLOPE * sigma
    hi = np.stack((np.broadcast_to(np.max(batch.w, axis=1)[:, None], sigma.shape), upper_uv, upper_uv), axis=-1)
    x, value = batched_box_lsq(gram, rhs, hi)
    return x, np.maximum(value + const, 0.0)
