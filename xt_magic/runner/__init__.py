"""The node-side runner: runner.py uses only the standard library."""
