"""A hazard-style end-of-turn policy, fitted on the tune half: tested, not the default.

The idea (issue 11): instead of class windows, weigh every piece of evidence as log-odds
that the user will go on, and let the silence itself lower those odds as the pause
grows.  Two facts of the shared recordings make it a formula:

* among pauses that have lasted ``S_REF_MS``, a logistic regression on what is known by
  then (class of the words, a listing comma, Smart Turn's logit, no verdict yet) gives
  the log-odds ``beta . x`` that this pause is inside the turn;
* mid-turn pauses that have lasted that long end (the user speaks again) at a roughly
  constant rate: each further ``tau`` ms of silence divides the odds by e (the fitted
  ``tau`` is ~110 ms).

So the odds of "still talking" after ``s`` ms are ``exp(beta . x - (s - S_REF_MS) / tau)``
and the turn ends when they fall below ``exp(-c)``:
``s >= S_REF_MS + tau * (beta . x + c)``.  Smart Turn's probability enters continuously
and is re-read whenever a later verdict arrives.  ``c`` is the curve's knob.  An order
the words call unfinished still waits ``Windows.incomplete_fast`` at least (the 500 ms
hesitation of ``tests/test_dialogue.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from halfsec.lab.eot.replay import Replayed
from halfsec.lab.eot.simulate import Policy, evidence_at
from halfsec.turn.policy import Evidence, Windows, text_class

S_REF_MS = 150.0
"""Silence at which the regression reads the evidence (the transcript is there by then
in most pauses)."""
CAP_MS = 900.0
FEATURES = ("bias", "incomplete", "complete", "listing_comma", "audio_logit", "no_verdict")


def features(ev: Evidence) -> np.ndarray:
    cls = text_class(ev.transcript, ev.complete, listing=False)
    comma = bool(ev.transcript) and (ev.transcript or "").rstrip().endswith(",")
    p = ev.audio_p
    logit = 0.0
    if p is not None:
        q = min(max(p, 1e-4), 1 - 1e-4)
        logit = max(-4.0, min(4.0, math.log(q / (1 - q))))
    return np.array(
        [
            1.0,
            cls == "incomplete",
            cls == "complete",
            comma and cls != "incomplete",
            logit,
            p is None,
        ],
        dtype=float,
    )


def fit(recs: Sequence[Replayed], l2: float = 1.0) -> tuple[np.ndarray, float]:
    """(beta, tau): the regression over pauses that lasted ``S_REF_MS`` (mid-turn = 1,
    the turn's end = 0), and the e-folding time of mid-turn pauses beyond it."""
    xs: list[np.ndarray] = []
    ys: list[float] = []
    longer: list[float] = []
    for r in recs:
        for p in r.pauses:
            mid = p.resume_ms is not None and p.resume_ms < r.true_end_ms
            if p.resume_ms is not None and (not mid or p.resume_ms - p.end_ms < S_REF_MS):
                continue
            if mid and p.resume_ms is not None:
                longer.append(p.resume_ms - p.end_ms - S_REF_MS)
            t = max(p.end_ms + S_REF_MS, p.at_ms + p.stt_ms)
            xs.append(features(evidence_at(p, t)))
            ys.append(1.0 if mid else 0.0)
    x, y = np.array(xs), np.array(ys)
    beta = np.zeros(x.shape[1])
    ridge = l2 * np.diag(np.r_[0.0, np.ones(x.shape[1] - 1)])
    for _ in range(50):  # Newton steps of an L2-regularised logistic regression
        pr = 1.0 / (1.0 + np.exp(-(x @ beta)))
        grad = x.T @ (pr - y) + ridge @ beta
        hess = (x * (pr * (1 - pr))[:, None]).T @ x + ridge
        beta -= np.linalg.solve(hess, grad)
    tau = float(np.mean(longer)) if longer else 110.0  # exponential: mean = e-folding time
    return beta, tau


def hazard(c: float, beta: np.ndarray, tau: float, w: Windows | None = None) -> Policy:
    floor = (w or Windows()).incomplete_fast

    def need(ev: Evidence) -> float:
        x = features(ev)
        s = S_REF_MS + tau * (float(x @ beta) + c)
        return max(floor if x[1] else 0.0, min(CAP_MS, s))

    return Policy("hazard", c, need, True)
