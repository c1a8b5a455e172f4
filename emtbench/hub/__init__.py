"""The Hugging Face Hub side of emtbench: model cards (:mod:`.cards`) and uploads (:mod:`.push`)."""
