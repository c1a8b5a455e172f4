"""Vision-language suite: VQAv2, GQA, TextVQA and RefCOCO* tasks for lm-eval (CL-LLaVA App. B.3; docs/design.md §6)."""
