"""Layer 0: what every other layer may use -- errors, atomic writes, the cache folder, run records, the
registry, and the strict readers of untrusted input (readers, safe_pickle, images, paths, secrets)."""
