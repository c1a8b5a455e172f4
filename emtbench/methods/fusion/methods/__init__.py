"""The merge methods, one module each; they register themselves with ``MERGE_METHODS`` when imported."""
