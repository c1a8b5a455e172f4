"""Vision-language suite: VQAv2, GQA, TextVQA and RefCOCO* tasks for lm-eval (SPEC §5)."""
