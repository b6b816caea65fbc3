"""Performance and search-quality benchmarks for optuna-rnn (not tests).

Run them all with ``python -m benchmarks`` (``--quick`` for a short smoke run);
each section compares both sides in the same run and writes ``benchmarks/RESULTS.md``.
"""
