"""Prismatic VLMs: converting a run to a transformers LLaVA checkpoint (:mod:`.convert`), or evaluating it
with the prismatic package itself (:mod:`.lm`, lm-eval model ``emtbench-prismatic``)."""
