"""Which fix works: try a run's candidate fixes as a paired sweep, diagnose it, rank them.

Named ``repair`` so that the function ``gradlab.fix`` never meets a module of that name (DESIGN.md).
"""

from __future__ import annotations

from gradlab.repair.workflow import FixError, FixOutcome, fix, format_outcomes

__all__ = ["FixError", "FixOutcome", "fix", "format_outcomes"]
