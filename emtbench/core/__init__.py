"""Layer 0: what every other layer may use -- errors, atomic writes, the cache folder, run records, the registry."""
