"""Tune a recurrent network on the built-in ``co2`` dataset.

Usage: ``python studies/co2.py [--n-trials N] [--storage URL] [--sampler S] [--pruner P] [--seed S] ...``
takes every option of ``optuna-rnn run`` (see ``--help``). Re-running the same command resumes.
"""

import sys

from optuna_rnn.cli import study_script

if __name__ == "__main__":
    sys.exit(study_script("co2"))
