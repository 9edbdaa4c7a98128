"""Frozen CLIP visual features: load any open_clip model, extract per-layer CLS / all tokens, cache them."""
from training.config import FeatureSettings
from training.features.cache import FeatureCacheError, FeatureStore, all_token_cache_size, cache_features
from training.features.encoder import (
    ClipLoadError,
    Features,
    ImageDecodeError,
    Needs,
    UnsupportedEncoder,
    VisualEncoder,
    decode_image,
    load_clip,
    to_pixels,
)

__all__ = [
    "ClipLoadError", "FeatureCacheError", "FeatureSettings", "FeatureStore", "Features", "ImageDecodeError",
    "Needs", "UnsupportedEncoder", "VisualEncoder", "all_token_cache_size", "cache_features", "decode_image",
    "load_clip", "to_pixels",
]
