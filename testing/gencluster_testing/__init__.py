"""Harnesses shared by the tests and the benchmarks: a real `gencluster dev up`, a real operator,
clusters built without the operator, the partition workloads and their history checkers.

An installed package (like `kopf.testing`) rather than a corner of `tests/`, so `bench/` imports
it the ordinary way and runs without pytest; nothing here imports pytest.
"""
