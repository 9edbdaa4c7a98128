"""Evaluation library: metrics by their official protocols and benchmark runners.
May import `training` (to run a model); never imports luigi or pipeline."""
