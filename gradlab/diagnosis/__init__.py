"""Frames → findings: the rules (with their sourced thresholds), the tables they read, and the
verdicts worded for people and saved for machines. Named ``diagnosis`` so that the function
``gradlab.diagnose`` never meets a module of that name."""

from __future__ import annotations

from gradlab.diagnosis.findings import (
    COLUMNS,
    KINDS,
    SEVERITY,
    findings_from_json,
    findings_to_json,
    format_findings,
    run_verdicts,
)
from gradlab.diagnosis.fixes import suggest_fix
from gradlab.diagnosis.thresholds import Thresholds
from gradlab.diagnosis.verdicts import diagnose

__all__ = [
    "COLUMNS",
    "KINDS",
    "SEVERITY",
    "Thresholds",
    "diagnose",
    "findings_from_json",
    "findings_to_json",
    "format_findings",
    "run_verdicts",
    "suggest_fix",
]
