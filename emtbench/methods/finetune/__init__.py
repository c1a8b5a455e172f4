"""Fine-tuning with the forgetting mitigations of the continual-learning paper (App. A.5).

One module per method (:mod:`.linear`, :mod:`.full`, :mod:`.lora`, :mod:`.soft`, :mod:`.msgm`) behind
:class:`~.base.FinetuneMethod`; shared settings in :class:`~.options.TrainingOptions`; the pieces of a
run in :mod:`.data` (conversations, collator), :mod:`.rehearsal`, :mod:`.prepare` (which parameters
train), :mod:`.loss` (soft targets), :mod:`.trainer` (transformers' Trainer) and :mod:`.saving`
(distributed final save); :func:`finetune` (:mod:`.run`) puts them together.
"""

from emtbench.methods.finetune.base import FINETUNE_METHODS, FinetuneMethod, get_method, register_method
from emtbench.methods.finetune.options import FinetuneOptions, FinetuneResult, TrainingOptions, TrainSettings
from emtbench.methods.finetune.run import finetune

__all__ = [
    "FINETUNE_METHODS",
    "FinetuneMethod",
    "FinetuneOptions",
    "FinetuneResult",
    "TrainSettings",
    "TrainingOptions",
    "finetune",
    "get_method",
    "register_method",
]
