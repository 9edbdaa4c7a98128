"""How scores are computed, in words: the labels every metrics.json and table carries.  Kept apart from the
metric code (which imports torch) so settings and tables can name them without loading torch."""
from __future__ import annotations

TIE_RULE_LABEL = ("R@k = expected value under random tie-breaking (headline); "
                  "_pess = pessimistic (tied wrong candidates first); median rank floor(median)+1 (vsepp)")

# VisDial IT2T: which ranking each metrics key holds (stored in metrics.json's `scoring`, shown under Table 5.5).
IT2T_SUM_LABEL = ("it2t_*: options ranked by summed answer-token loss after the image and dialogue "
                  "(the thesis' ranking; favours short options)")
IT2T_MEAN_LABEL = "it2t_meanloss_*: options ranked by mean answer-token loss (length-normalised)"
NO_IMAGE_LABEL = ("baseline no_image: the same frozen LLM and prompt with no visual tokens, both rankings "
                  "(what the text alone gives)")
LENGTH_LABEL = "baseline length: options ranked by character count, shortest first, no model (ties: expected value)"
