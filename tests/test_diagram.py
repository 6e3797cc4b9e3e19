"""Unit diagrams: the DOT traced from each unit parses and shows its branches, merges and convs; the page draws it."""
import re
import shutil
import subprocess

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from mscompare.config import config_for
from mscompare.diagram import unit_dot
from mscompare.models import list_units

QUOTED = r'"(?:[^"\\]|\\.)*"'
VALUE = rf"(?:{QUOTED}|[\w.#-]+)"
ATTRS = rf"\[(?:\w+={VALUE})(?:, \w+={VALUE})*\]"
NODE = re.compile(rf"^({QUOTED}) ({ATTRS});$")
EDGE = re.compile(rf"^({QUOTED}) -> ({QUOTED})(?: ({ATTRS}))?;$")
DEFAULTS = re.compile(rf"^(graph|node|edge) {ATTRS};$")
CLUSTER_ATTRS = re.compile(rf"^(?:\w+={VALUE}; )*\w+={VALUE};$")


def unquote(s):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), s[1:-1])


def attrs(text):
    return {k: unquote(v) if v.startswith('"') else v for k, v in re.findall(rf"(\w+)=({VALUE})", text or "")}


def parse(dot):
    """A strict parser for the DOT subset unit_dot writes: every line must be a known statement, braces
    balance, and every edge joins declared nodes. Returns nodes {id: attrs}, edges [(a, b, attrs)] and
    clusters {label: [node ids]}."""
    lines = dot.strip().splitlines()
    assert lines[0] == "digraph unit {" and lines[-1] == "}"
    nodes, edges, clusters, cluster = {}, [], {}, None
    for line in (s.strip() for s in lines[1:-1]):
        if re.match(r"^subgraph cluster_\d+ \{$", line):
            assert cluster is None, "nested cluster"
            cluster = []
        elif line == "}":
            assert cluster is not None, "unbalanced }"
            clusters[name] = cluster
            cluster = None
        elif cluster is not None and CLUSTER_ATTRS.match(line):
            name = attrs(line)["label"]
        elif m := NODE.match(line):
            nid = unquote(m.group(1))
            assert nid not in nodes, f"node {nid} declared twice"
            nodes[nid] = attrs(m.group(2))
            if cluster is not None:
                cluster.append(nid)
        elif m := EDGE.match(line):
            edges.append((unquote(m.group(1)), unquote(m.group(2)), attrs(m.group(3))))
        else:
            assert DEFAULTS.match(line), f"not a DOT statement this writer makes: {line!r}"
    assert cluster is None, "unclosed cluster"
    for a, b, _ in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} to an undeclared node"
    return nodes, edges, clusters


def graph(model, **kw):
    return parse(unit_dot(config_for(model, "cifar10", **kw)))


def label(nodes, nid):
    return nodes[nid]["label"]


def find(nodes, first_line):
    hits = [n for n, a in nodes.items() if a["label"].split("\n")[0] == first_line]
    assert len(hits) == 1, (first_line, [a["label"] for a in nodes.values()])
    return hits[0]


def sources(edges, nid):
    return [a for a, b, _ in edges if b == nid]


def cluster_of(clusters, nid):
    return next((name for name, members in clusters.items() if nid in members), None)


@pytest.mark.parametrize("model", list_units())
def test_every_unit_parses_from_input_to_output(model):
    nodes, edges, _ = graph(model)
    inputs = [n for n, a in nodes.items() if a["label"].startswith("input")]
    outputs = [n for n, a in nodes.items() if a["label"].startswith("output")]
    assert len(inputs) == 1 and len(outputs) == 1
    assert label(nodes, inputs[0]) == "input (32 maps)" and label(nodes, outputs[0]) == "output (32 maps)"
    # every node lies on a path from the input to the output
    succ = {n: [b for a, b, _ in edges if a == n] for n in nodes}
    pred = {n: sources(edges, n) for n in nodes}

    def reach(start, nxt):
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo += nxt[n]
        return seen

    assert reach(inputs[0], succ) == set(nodes) == reach(outputs[0], pred)


@pytest.mark.skipif(shutil.which("dot") is None, reason="the graphviz `dot` program is not installed")
@pytest.mark.parametrize("model", list_units())
def test_graphviz_itself_lays_out_the_dot(model):
    r = subprocess.run(["dot", "-Tsvg"], input=unit_dot(config_for(model, "mnist")), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert "<svg" in r.stdout


def test_ms_concat_concatenates_two_branches_then_adds_the_residual():
    nodes, edges, clusters = graph("ms_concat")
    cat = find(nodes, "concat (Eq. 2)")
    assert label(nodes, cat) == "concat (Eq. 2)\n16+16 -> 32"
    ins = sources(edges, cat)
    assert len(ins) == 2
    assert {cluster_of(clusters, n) for n in ins} == {"branch scale1", "branch scale2"}
    assert len(clusters["branch scale1"]) == 2 and len(clusters["branch scale2"]) == 4  # 1 and 2 SepConvs
    res = find(nodes, "residual add")
    assert set(sources(edges, res)) == {"x", cat}  # the concat restores all 32 maps: no 1x1 after it
    assert "add (Eq. 3)" not in unit_dot(config_for("ms_concat", "cifar10"))


def test_ms_add_adds_two_branches_and_the_residual():
    nodes, edges, clusters = graph("ms_add")
    add = find(nodes, "add (Eq. 3)")
    ins = sources(edges, add)
    assert len(ins) == 2 and {cluster_of(clusters, n) for n in ins} == {"branch scale1", "branch scale2"}
    res = find(nodes, "residual add")
    res_ins = sources(edges, res)
    assert len(res_ins) == 2 and "x" in res_ins  # the shortcut from the input ...
    shortcut = [e for e in edges if e[:2] == ("x", res)][0]
    assert shortcut[2].get("style") == "dashed"
    restore = next(n for n in res_ins if n != "x")  # ... and the 1x1 that restores the width after Eq. 3
    assert label(nodes, restore) == "1x1 pointwise conv 16->32\nBN"
    assert sources(edges, restore) == [add]
    assert not [a for a in nodes.values() if a["label"].startswith("concat")]
    after = [b for a, b, _ in edges if a == res]
    assert [label(nodes, n) for n in after] == ["BN + ReLU"]


def test_googlenet_concatenates_four_branches():
    nodes, edges, clusters = graph("googlenet")
    cat = find(nodes, "concat (4 branches)")
    ins = sources(edges, cat)
    assert len(ins) == 4 and len({cluster_of(clusters, n) for n in ins}) == 4
    assert sorted(clusters) == ["branch b1", "branch b3", "branch b5", "branch bp"]
    labels = [a["label"] for a in nodes.values()]
    assert "3x3 max-pool, stride 1" in labels
    assert any(lb.startswith("5x5 conv 48->8") for lb in labels)
    assert not any("residual" in lb for lb in labels)


def test_alexnet_is_a_single_conv_path():
    nodes, edges, clusters = graph("alexnet")
    assert not clusters and len(nodes) == 3 and len(edges) == 2
    (conv,) = [n for n, a in nodes.items() if "conv" in a["label"]]
    assert label(nodes, conv) == "3x3 conv 32->32\nBN + ReLU"


def test_mobilenet_is_depthwise_then_pointwise():
    nodes, edges, clusters = graph("mobilenet", width=64)
    convs = [a["label"] for a in nodes.values() if "conv" in a["label"]]
    assert convs == ["3x3 depthwise conv 64->64\nBN + ReLU", "1x1 pointwise conv 64->64\nBN + ReLU"]
    assert not clusters


def test_diagram_follows_the_config():
    nodes, _, _ = graph("ms_add", width=64, expand=2)
    labels = [a["label"] for a in nodes.values()]
    assert "1x1 pointwise conv 64->128\nBN + ReLU" in labels  # N = 2C extended maps
    assert "One ms_add unit, width 64" in unit_dot(config_for("ms_add", "cifar10", width=64))
    from mscompare.models import ModelConfig

    plain, plain_edges, _ = parse(unit_dot(ModelConfig(model="ms_concat", residual_norm=False)))
    res = find(plain, "residual add")
    assert [label(plain, b) for a, b, _ in plain_edges if a == res] == ["ReLU"]  # no BN on the sum


def test_an_untraceable_unit_is_a_clear_error(monkeypatch):
    import torch

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # control flow on a value: torch.fx can't trace it

    monkeypatch.setattr("mscompare.diagram.get_unit", lambda name: lambda cfg: DataDependent())
    with pytest.raises(ValueError, match="the alexnet unit can't be traced by torch.fx"):
        unit_dot(config_for("alexnet", "mnist"))


def graphviz_specs(at):
    return [el.proto.spec for el in at.get("graphviz_chart")]


def test_architectures_page_draws_the_selected_unit(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/architectures.py").run()
    assert not at.exception, [e.value for e in at.exception]
    specs = graphviz_specs(at)
    assert len(specs) == 1 and "One ms_add unit, width 32" in specs[0] and "add (Eq. 3)" in specs[0]
    parse(specs[0])
    at.selectbox[1].set_value("googlenet").run()
    assert not at.exception, [e.value for e in at.exception]
    (spec,) = graphviz_specs(at)
    assert "concat (4 branches)" in spec
    assert any(c.value.startswith("Inception(") for c in at.code)  # the repr, in its expander
