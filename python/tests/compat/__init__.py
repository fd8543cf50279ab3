"""Compatibility scenarios run against upstream TransferQueue and ours (see conftest.py).

A package, so that its modules (compat.conftest, compat.test_data, ...) never
clash with python/tests' own conftest and test modules of the same names."""
