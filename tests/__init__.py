"""The test suite. Its helpers are modules of this package (tests.workflow_helpers, tests.track_clips,
...); the benchmarks' modules are imported from the tools package (tools.fullsize, tools.modelbench).
"""
