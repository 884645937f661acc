"""Backends: thin walkers over the IR. The driver (`specc.api.compile_to`) dispatches on the target's backend."""
