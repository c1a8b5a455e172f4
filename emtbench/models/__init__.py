"""Model wrappers registered with lm-eval and transformers when this package is imported."""
