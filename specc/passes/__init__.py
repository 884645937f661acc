"""Graph -> Graph optimization passes, one per file, run by one pipeline (see pipeline.py)."""
from .pipeline import PASSES, PassResult, PipelineOptions, run_pipeline

__all__ = ["PASSES", "PassResult", "PipelineOptions", "run_pipeline"]
