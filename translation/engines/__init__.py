"""Translation engines, one module each, all implementing `translation.engines.base.Engine`."""
