"""HTML tables of the report (shared by its sections)."""

from __future__ import annotations

from collections.abc import Sequence

from gradlab.report.context import esc


def table(header: Sequence[str], rows: Sequence[Sequence[str]], num: Sequence[int] = ()) -> str:
    """An HTML table: ``header`` plain text (escaped here), ``rows`` ready HTML cells, column 0 an id."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    cls = {i: ' class="num"' for i in num} | {0: ' class="id"'}
    body = "\n".join(
        "<tr>" + "".join(f"<td{cls.get(i, '')}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n'
        "</tbody></table></div>"
    )
