"""ptvl pipeline: the Luigi DAG, the CLI, settings, source readers, the synthetic sample and reports.

This is the only package that imports luigi; `translation`, `training` and `eval` are plain libraries.
"""
import os

# img2dataset imports albumentations, which otherwise checks PyPI for updates on import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
