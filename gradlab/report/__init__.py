"""The only writer of PNG and HTML: the self-contained report of a results folder."""

from __future__ import annotations

from gradlab.report.page import load_and_report, write_report

__all__ = ["load_and_report", "write_report"]
