"""Language tasks: lm-eval's built-in suite (group YAMLs) and the offline standard-library probe."""
