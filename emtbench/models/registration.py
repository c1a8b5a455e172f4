"""emtbench's models in other libraries' registries: lm-eval's model registry and transformers' Auto classes.

Both registrations are cheap to ask for: lm-eval models are registered by import path (the module
loads only when a run uses it), and the flagship joins the Auto classes as soon as ``transformers`` is
imported (:func:`register_flagship_when_transformers_loads`, called by ``import emtbench``), so
``emtbench --help`` never pays for torch.
"""

from __future__ import annotations

import sys

LM_EVAL_MODELS = {
    "emtbench-clip": "emtbench.models.clip:CLIPZeroShot",
    "emtbench-prismatic": "emtbench.models.prismatic.lm:PrismaticLM",
}
"""lm-eval ``--model`` names emtbench adds, with the class each one loads."""
_lm_eval_registered = False


def register_lm_eval_models() -> None:
    """Add :data:`LM_EVAL_MODELS` to lm-eval's model registry (idempotent)."""
    global _lm_eval_registered
    if _lm_eval_registered:
        return
    import lm_eval.models  # noqa: F401  (lm-eval's own models first: a non-empty registry skips them)
    from lm_eval.api.registry import model_registry

    for name, target in LM_EVAL_MODELS.items():
        if name not in model_registry:  # importing the module itself registers the class
            model_registry.register(name, target=target)
    _lm_eval_registered = True


class _RegisterAfterTransformersImport:
    """Meta-path finder that registers the flagship right after ``import transformers`` completes.

    Why: importing transformers (and torch) costs seconds, which ``emtbench --help`` must not pay, yet
    the Auto classes must know the flagship before any user code calls ``from_pretrained``.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_then_register(module):
            original_exec(module)
            _register_flagship_quietly()

        spec.loader.exec_module = exec_then_register
        return spec


def _register_flagship_quietly() -> None:
    try:
        from emtbench.models.flagship.auto import register
    except Exception as error:  # a broken optional model must never break `import transformers`
        import warnings

        warnings.warn(
            f"emtbench could not register its flagship model with transformers: {error}", stacklevel=2
        )
        return
    register()


def register_flagship_when_transformers_loads() -> None:
    """Register now if transformers is already imported, else as soon as it is."""
    if "transformers" in sys.modules:
        _register_flagship_quietly()
    elif not any(isinstance(f, _RegisterAfterTransformersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformersImport())
