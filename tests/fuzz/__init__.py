"""The spec fuzzer (see run.py)."""
