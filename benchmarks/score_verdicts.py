"""Score gradlab's verdicts on the labelled corpus: the confusion table and precision/recall per verdict.

    python benchmarks/score_verdicts.py

Runs every case of ``tests/corpus.py`` (runs whose verdicts are known by construction: healthy runs,
vanishing sigmoid nets, exploding inits, a diverging learning rate, frozen layers, dying units…; a few
seconds), diagnoses each, and prints, as Markdown:

1. per verdict: how many runs are labelled with it, how many it was flagged on, true and false
   positives, false negatives, precision and recall (the README's "How far to trust the verdicts");
2. the confusion table: for the runs labelled with each verdict (rows), how many were flagged with it
   (the diagonal), with each verdict they are not labelled with (off the diagonal: the mix-ups), or
   not at all ("missed");
3. every run whose verdict set differs from its label, if any.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from corpus import CASES, confusion, diagnose_case, markdown, score


def main() -> int:
    """Diagnose the corpus, print the tables; exit 1 when some run's verdicts are wrong."""
    truth = {c.name: c.truth for c in CASES}
    got = {c.name: diagnose_case(c)[1] for c in CASES}
    wrong = [name for name in truth if got[name] != truth[name]]
    healthy = [n for n in truth if truth[n] == {"healthy"}]
    alarms = sum(got[n] != {"healthy"} for n in healthy)
    print(f"{len(truth)} runs, {len(truth) - len(wrong)} with exactly their labelled verdicts; "
          f"{len(healthy)} healthy runs, {alarms} with a warning\n")
    print(markdown(score(truth, got)))
    print("\nConfusion table (diagonal: runs flagged with their label; off it: with a verdict they are not "
          "labelled with):\n")
    print(markdown(confusion(truth, got)))
    for name in wrong:
        print(f"\nWRONG {name}: labelled {sorted(truth[name])}, flagged {sorted(got[name])}")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
