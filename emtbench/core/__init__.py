"""Lowest layer: what every other package relies on (errors, file writing, reading untrusted input)."""
