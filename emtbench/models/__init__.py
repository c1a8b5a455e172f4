"""Layer 3: model code -- the flagship, the Prismatic converter, the CLIP baseline, part mappings.

Importing this package is cheap; :mod:`.registration` adds emtbench's models to lm-eval and transformers.
"""
