"""Tune a recurrent network on the built-in ``japanese_vowels`` dataset (needs ``optuna-rnn[datasets]``).

Usage: ``python studies/japanese_vowels.py [--n-trials N] [--storage URL] [--sampler S] [--seed S] ...``
takes every option of ``optuna-rnn run`` (see ``--help``). Re-running the same command resumes.
"""

import sys

from optuna_rnn.cli import study_script

if __name__ == "__main__":
    sys.exit(study_script("japanese_vowels"))
