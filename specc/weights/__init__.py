"""Pretrained weights in and out: checkpoint readers, weight maps as data, import/export, loading into modules.

    specc weights import specs/gpt2.nn gpt2-folder/ -o gpt2.safetensors      # config.json sets the sizes
    specc weights export specs/gpt2.nn gpt2.safetensors --map gpt2-hf -o hf/  # config.json + model.safetensors
    specc.load("specs/gpt2.nn").to_torch(weights="gpt2.safetensors")

Maps live in `maps/` beside the specs (specs/maps/*.toml, see maps.py for the format). Nothing here imports torch
at module level: planning reads names and shapes only; tensors are touched inside the functions that need them.
Layering: above the backends (the model's state_dict layout comes from the PyTorch backend), below api and cli.
"""
from __future__ import annotations

from .convert import ImportResult, InitReport, export_weights, import_weights, init_from, load_weights, stored_overrides
from .layout import Layout, model_layout, module_layout
from .maps import WeightMap, find_map, load_map, maps_for
from .readers import Checkpoint, open_checkpoint
from .report import MappingReport, WeightsError

__all__ = ["Checkpoint", "ImportResult", "InitReport", "Layout", "MappingReport", "WeightMap", "WeightsError",
           "export_weights", "find_map", "import_weights", "init_from", "load_map", "load_weights", "maps_for",
           "model_layout", "module_layout", "open_checkpoint", "stored_overrides"]
