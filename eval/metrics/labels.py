"""How scores are computed, in words: the labels every metrics.json and table carries.  Kept apart from the
metric code (which imports torch) so settings and tables can name them without loading torch."""
from __future__ import annotations

TIE_RULE_LABEL = ("R@k = expected value under random tie-breaking (headline); "
                  "_pess = pessimistic (tied wrong candidates first); median rank floor(median)+1 (vsepp)")
