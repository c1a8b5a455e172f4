"""``emtbench demo``: the EMT forgetting experiment end to end on the offline flagship, as a recipe of public commands.

Every stage is an ``emtbench`` command a user could type (``build-base``, ``eval``, ``finetune``,
``tailor``, ``merge``, ``leaderboard build``); the demo only chooses their arguments, keeps each
stage's output in its own folder under ``--out`` (so a rerun resumes), and summarises the results.
"""
