"""How much the phrase memory gets to say, context by context.

One global weight for the phrase memory lets a user who repeats whole
messages push it up until lines they have not written before, and other
kinds of text, get worse. Here the memory's share of a context is a small
logistic model of the evidence: how often the two-word and the one-word
context were seen and how sure the memory is (its best word's probability):
what the memory knows, the same for every head. It is fitted on two kinds of rows at once:
the user's held-out lines (where the memory should speak up when it knows)
and anchor text the model version writes itself (``anchor``; where it should
stay quiet, being another kind of text). Four numbers, kept in the state.
"""
from __future__ import annotations

import math

import numpy as np

from .phrases import Context, PhraseMemory

STEPS = 300
MAX_SHARE = 0.95
# For a state saved before the gate: about the old rule, share = weight * e / (e + 1)
# for a last word seen e times.
DEFAULT_GATE = np.array([0.0, 0.0, 1.0, 0.0], np.float32)


def gate_inputs(memory: PhraseMemory, contexts: np.ndarray, memory_best: np.ndarray) -> np.ndarray:
    """``[N, 4]``: bias, log counts of the two-word and the one-word context, the memory's best probability."""
    counts = np.column_stack([memory.followed_rows(contexts, 2), memory.followed_rows(contexts, 1)]).astype(np.float32)
    return np.column_stack([np.ones(len(contexts)), np.log1p(counts), memory_best]).astype(np.float32)


def _counts(memory: PhraseMemory, context: Context) -> tuple[int, int]:
    two = memory.followed(context[-2:]) if len(context) >= 2 else 0
    return two, memory.evidence(context) if len(context) else 0


def share(theta: np.ndarray, inputs: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The memory's share per row: ``scale * sigmoid(inputs @ theta)``, none where it never saw the last word."""
    lam = scale / (1.0 + np.exp(-(inputs @ theta)))
    return np.where(inputs[:, 2] > 0, np.minimum(lam, MAX_SHARE), 0.0).astype(np.float32)


def fit_gate(user: tuple[np.ndarray, np.ndarray, np.ndarray],
             anchor: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], anchor_weight: float = 1.0,
             start: np.ndarray | None = None) -> np.ndarray:
    """Gate weights maximizing the mixture's log-likelihood on both kinds of rows.

    ``user``: (inputs ``[N, 4]``, neural and memory probability of the
    target ``[N]``). ``anchor``: (inputs ``[M, 4]``, neural and memory
    probabilities of the version's likeliest words ``[M, K]``, the
    version's probabilities of them ``[M, K]``: its expected log-likelihood),
    weighted ``anchor_weight`` against the user's rows.

    ``start``: the gate fitted last time. A few new lines barely move the
    optimum: half the steps from there end within 0.002 of a fit from
    scratch (measured on SMS, 2 and 50 lines after 1,000).
    """
    x_u, p_u, m_u = user
    x_a, p_a, m_a, t_a = anchor
    t_a = t_a / np.maximum(t_a.sum(axis=1, keepdims=True), 1e-12)
    live_u, live_a = x_u[:, 2] > 0, x_a[:, 2] > 0
    # What every step reads, made once: the numerators, and float64 copies of what each product with the
    # float64 shares would otherwise convert again (the same numbers: the gate is what it was, sooner).
    gain_u, gain_a = live_u * (m_u - p_u), t_a * (m_a - p_a)
    x_u, p_u, m_u, x_a, p_a, m_a = (a.astype(np.float64) for a in (x_u, p_u, m_u, x_a, p_a, m_a))
    theta = np.zeros(x_u.shape[1])
    theta[0] = -2.0
    if start is not None:
        theta[:] = start
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t in range(1, (STEPS if start is None else STEPS // 2) + 1):
        lam_u = 1.0 / (1.0 + np.exp(-(x_u @ theta)))
        lam_a = 1.0 / (1.0 + np.exp(-(x_a @ theta)))
        # d/d lambda of log((1 - l) p + l m) is (m - p) / mix
        du = gain_u / np.maximum((1 - lam_u) * p_u + lam_u * m_u, 1e-12)
        da = live_a * (gain_a / np.maximum((1 - lam_a[:, None]) * p_a + lam_a[:, None] * m_a, 1e-12)).sum(axis=1)
        grad = -(x_u.T @ (du * lam_u * (1 - lam_u)) / max(len(x_u), 1)
                 + anchor_weight * x_a.T @ (da * lam_a * (1 - lam_a)) / max(len(x_a), 1))
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        theta -= 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return theta.astype(np.float32)


def mix(neural: np.ndarray, memory: PhraseMemory, contexts: np.ndarray, weight: float,
        gate: np.ndarray | None = None) -> np.ndarray:
    """Interpolate neural ``[N, V]`` probabilities with the phrase memory, in place; returns ``neural``.

    Each row's memory share is ``share(gate, ...)`` scaled by ``weight``: a
    context the memory never saw leaves the neural model alone (and costs nothing).
    """
    if weight <= 0 or not len(memory):
        return neural
    for row, context in enumerate(contexts):
        if not memory.evidence(context):
            continue
        m = memory.probs(context)
        lam = context_share(memory, context, float(m.max()), weight, gate)
        neural[row] *= 1 - lam
        neural[row] += lam * m
    return neural


def context_share(memory: PhraseMemory, context: Context, best: float, weight: float,
                  gate: np.ndarray | None) -> float:
    """``share`` for one context the memory has evidence for, whose best probability there is ``best``.

    One context at a time (a keyboard's): plain floats beat numpy's per-call cost.
    """
    theta = DEFAULT_GATE if gate is None else gate
    two, one = _counts(memory, context)
    x = float(theta[0]) + float(theta[1]) * math.log1p(two) + float(theta[2]) * math.log1p(one) \
        + float(theta[3]) * best
    return min(weight / (1.0 + math.exp(-x)), MAX_SHARE)
