"""IR text round trip: print -> parse_module -> print is the identity, and the parsed graphs equal the originals."""
from __future__ import annotations

from pathlib import Path

import pytest

import specc
from specc.printer import format_graph, parse_module, print_module

SPECS = Path(__file__).resolve().parent.parent / "specs"
ALL_SPECS = sorted(p.stem for p in SPECS.glob("*.nn"))


@pytest.fixture(scope="module", params=ALL_SPECS)
def module(request):
    return specc.load(SPECS / f"{request.param}.nn").module


def test_print_parse_print_is_identity(module):
    text = print_module(module)
    assert print_module(parse_module(text)) == text


def test_parsed_graphs_equal_the_originals(module):
    back = parse_module(print_module(module))
    assert back.name == module.name and back.main == module.main
    assert list(back.graphs) == list(module.graphs)
    assert {k: v[0] for k, v in back.constraints.items()} == {k: v[0] for k, v in module.constraints.items()}
    for name, g in module.graphs.items():
        h = back.graphs[name]
        assert (h.block, h.inputs, h.outputs) == (g.block, g.inputs, g.outputs)
        # nodes are frozen records: equal records mean equal op, inputs, attributes, type, span and layer
        assert h.nodes() == g.nodes(), name
        assert sorted(h.g.edges) == sorted(g.g.edges)


def test_text_without_spans_also_round_trips(module):
    text = print_module(module, spans=False)
    assert print_module(parse_module(text), spans=False) == text


def test_printing_is_deterministic():
    a = print_module(specc.load(SPECS / "resnet50.nn").module)
    b = print_module(specc.load(SPECS / "resnet50.nn").module)
    assert a == b


def test_graph_text_reads_like_the_spec():
    m = specc.load(SPECS / "lenet5.nn").module
    text = format_graph(m.graph, spans=False)
    assert "%c1: f32[B, 6, 28, 28] = op conv2d(%image) {'out_channels': 6, 'kernel_size': 5}" in text
    assert "%logits: f32[B, 10] = output(%f7)" in text
