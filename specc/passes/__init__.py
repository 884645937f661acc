"""Graph -> Graph optimization passes, one per file, run by one pipeline (see pipeline.py)."""
from .pipeline import DEFAULT_LEVEL, MAX_LEVEL, PASSES, PassResult, PipelineOptions, optimize, run_pipeline

__all__ = ["DEFAULT_LEVEL", "MAX_LEVEL", "PASSES", "PassResult", "PipelineOptions", "optimize", "run_pipeline"]
