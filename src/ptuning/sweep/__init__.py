"""``ptuning sweep``: hyper-parameter search over ``ptuning train`` with Optuna.

``space.py`` resolves the search space (the method's default, ``--space FILE`` overrides, flags that fix
options) and samples it; ``study.py`` runs the resumable, shareable study; ``results.py`` keeps the best
artifact and writes ``summary.json``; ``plots.py`` draws it; ``command.py`` is the command line. Nothing
here is imported by ``ptuning train``: Optuna and matplotlib load only when a sweep runs.
"""
