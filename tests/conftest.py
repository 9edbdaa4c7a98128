"""Test-wide settings: everything offline, quiet, and deterministic."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The tiny whole-DAG run shared by tests/test_operator.py and tests/test_browser.py.
pytest_plugins = ["tests.operator_run"]
