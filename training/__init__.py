"""V-Glória training library: CLIP features, bridges, the model, shard loading and the train loop.
Plain library: never imports luigi or pipeline."""
