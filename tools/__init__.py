"""Benchmarks and generators run as scripts (python tools/NAME.py), not part of the product package;
the tests import their modules as tools.NAME.
"""
