"""Metrics (captioning, retrieval, VisDial, VQA), each checked against its reference protocol."""
