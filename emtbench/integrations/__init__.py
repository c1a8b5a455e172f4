"""Bridges from emtbench to other evaluation harnesses (the top layer: may import everything below cli)."""
