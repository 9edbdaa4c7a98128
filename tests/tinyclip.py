"""Tests build their tiny open_clip folders with the same builder the sample uses."""
from training.features.tiny import build_tiny_clip, tiny_clip_config

__all__ = ["build_tiny_clip", "tiny_clip_config"]
