"""``python -m emtbench.cli`` (what ``accelerate launch -m emtbench.cli finetune ...`` runs)."""

import sys

from emtbench.cli import main

sys.exit(main())
