"""`python -m pipeline.review`: the `ptvl review` server process (pipeline/review/serve.py says why it is
a process of its own)."""
from __future__ import annotations

import sys

from pipeline.review.serve import main

if __name__ == "__main__":
    sys.exit(main())
