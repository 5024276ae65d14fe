"""Benchmarks of rlm-graph against a minimal exec()-based RLM loop (the floor).

Run from the project root: ``python -m bench all`` (or one figure by name, ``--quick``
for a smoke run). Every ratio is taken against a baseline measured in the same run,
because absolute numbers on a shared 2-core machine drift from minute to minute.
"""
