"""The fix that usually works for a finding, as the words ``gradlab diagnose`` prints: rendered from the
same recipes (:data:`gradlab.diagnosis.recipes.RECIPES`) that ``gradlab fix`` runs as config changes,
so a fix added there is both said here and tried there.

The words are in the run's language (:func:`gradlab.diagnosis.terms.language`: PyTorch calls for
``framework == "torch"``, plain terms for a user's NumPy loop, gradlab's config keys otherwise), and
changes of a number (the learning rate, the init scale, the clip threshold) are sized by what was
measured and said to be estimates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gradlab.diagnosis.recipes import Advice, Case, advice, applicable
from gradlab.diagnosis.thresholds import Thresholds


def alternatives(words: list[str]) -> str:
    """``a``, ``a, or b``, ``a, b, or c``."""
    if len(words) < 2:
        return "".join(words)
    return ", ".join(words[:-1]) + ", or " + words[-1]


def render(a: Advice, config: Mapping[str, Any]) -> str:
    """``lead: step, step, or step; note``, with the steps that apply to ``config``."""
    body = alternatives([s.words for s, _ in applicable(a, config)])
    return "; ".join(p for p in (": ".join(p for p in (a.lead, body) if p), a.note) if p)


def suggest_fix(kind: str, rule: str = "", config: Mapping[str, Any] | None = None, layer: str = "",
                *, cause: str = "", evidence: Mapping[str, Any] | None = None,
                thresholds: Thresholds | None = None) -> str:
    """A concrete fix for a finding: its recipe's steps that apply to ``config``, in order, in the run's
    language (:func:`gradlab.diagnosis.terms.language`), sized by ``evidence`` (measured values:
    ``update_ratio``, ``gain``, ``g``, ``clip``…) where it has them.

    ``layer`` is the affected layer's kind, or its activation's name (``tanh``); ``cause`` the kind of
    the finding this one follows from."""
    c = config or {}
    case = Case(c, evidence or {}, thresholds or Thresholds(), rule, layer)
    return render(advice(kind, case, cause), c)


__all__ = ["alternatives", "render", "suggest_fix"]
