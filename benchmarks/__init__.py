"""Godel's benchmark suite: each figure measured beside its raw baseline in the same run.

Run it with ``python benchmarks/run.py`` (``--quick`` for a smoke run, ``--only NAME`` for one benchmark).
It is not part of the test suite. See ``BENCHMARKS.md`` for the latest results and how to read them.
"""
