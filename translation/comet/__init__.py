"""COMET and CometKiwi on ptvl's own stack (transformers 5, numpy 2): no unbabel-comet, no pytorch-lightning.

`load_comet(model, device)` reads a published checkpoint (checkpoint.py), builds transformers' XLM-R with
COMET's mix and estimator on top (layers.py, model.py) and returns a `CometModel` whose `score(src, mt,
ref=None)` equals unbabel-comet 2.2.7's scores (tests/fixtures/comet/, held to 1e-5).  Importing this
package loads torch and transformers: callers in the pipeline import it where they need it.
"""
from __future__ import annotations

from translation.comet.checkpoint import REGRESSION, UNIFIED, CometCheckpoint, read_checkpoint
from translation.comet.model import CometModel, load_comet

__all__ = ["REGRESSION", "UNIFIED", "CometCheckpoint", "CometModel", "load_comet", "read_checkpoint"]
