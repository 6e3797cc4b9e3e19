"""Diagrams of one unit as Graphviz DOT, traced from the module itself with torch.fx (the paper's Figs 2-3)."""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from mscompare.models import ModelConfig, get_unit

# The paper's equation for each multi-scale unit's branch merge; other merges get none.
MERGE_EQUATION = {"ms_concat": "Eq. 2", "ms_add": "Eq. 3"}
FILL = {"input": "#e8e8e8", "output": "#e8e8e8", "conv": "#dbe9f6", "norm": "#fdf2d0", "act": "#fdf2d0",
        "pool": "#e3f1de", "concat": "#f9dcdc", "add": "#f9dcdc", "other": "#ffffff"}
SHAPE = {"input": "ellipse", "output": "ellipse", "concat": "invtrapezium", "add": "ellipse"}
CAT_FNS = (torch.cat, torch.concat)
ADD_FNS = (operator.add, operator.iadd, torch.add)


@dataclass
class Box:
    """One drawn node: a graph op, or a run of ops drawn as one (conv + BN + ReLU)."""

    id: str
    kind: str  # input, output, conv, norm, act, pool, concat, add, other
    lines: list[str]
    inputs: list[str] = field(default_factory=list)
    branch: str | None = None  # top-level submodule that is one branch of a merge, drawn as a cluster
    residual: bool = False  # an add whose input is the unit's own input (the shortcut)

    @property
    def label(self) -> str:
        return "\n".join(self.lines)


def conv_label(conv: nn.Conv2d) -> str:
    """'3x3 depthwise conv 32->32', '1x1 pointwise conv 32->16', '5x5 conv 48->8'."""
    k = "x".join(str(s) for s in conv.kernel_size)
    cin, cout, g = conv.in_channels, conv.out_channels, conv.groups
    if g > 1 and g == cin:
        kind = "depthwise conv"
    elif g > 1:
        kind = f"group conv (g={g})"
    elif conv.kernel_size == (1, 1):
        kind = "pointwise conv"
    else:
        kind = "conv"
    stride = "" if conv.stride == (1, 1) else f", stride {conv.stride[0]}"
    return f"{k} {kind} {cin}->{cout}{stride}"


def module_box(mod: nn.Module) -> tuple[str, str] | None:
    """(kind, label) of a leaf module; None for an identity, which is drawn as a plain edge."""
    if isinstance(mod, nn.Identity):
        return None
    if isinstance(mod, nn.Conv2d):
        return "conv", conv_label(mod)
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return "norm", "BN"
    if isinstance(mod, (nn.ReLU, nn.ReLU6)):
        return "act", type(mod).__name__
    if isinstance(mod, nn.MaxPool2d):
        k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
        s = mod.stride if isinstance(mod.stride, int) else mod.stride[0]
        return "pool", f"{k}x{k} max-pool, stride {s}"
    if isinstance(mod, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return "pool", type(mod).__name__
    return "other", type(mod).__name__


def channels(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta")
    return int(meta.shape[1]) if meta is not None and len(meta.shape) > 1 else None


def trace(cfg: ModelConfig) -> fx.GraphModule:
    """The unit of `cfg` traced by torch.fx, with each node's output shape (for the channel counts)."""
    try:
        gm = fx.symbolic_trace(get_unit(cfg.model)(cfg).eval())
    except Exception as e:  # data-dependent control flow, untraceable calls: torch.fx's own message says which
        raise ValueError(f"the {cfg.model} unit can't be traced by torch.fx, so it has no diagram: {e}") from e
    side = max(cfg.input_size // 2, 1)  # a unit sees the stem's pooled maps; the size changes no label
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, cfg.width, side, side))
    return gm


def boxes(cfg: ModelConfig) -> list[Box]:
    """The unit's graph as boxes in topological order, identities removed, conv+BN(+ReLU) runs merged."""
    gm = trace(cfg)
    mods = dict(gm.named_modules())
    alias: dict[str, str] = {}  # fx node name -> the box that stands for it
    out: dict[str, Box] = {}
    placeholder = None
    for node in gm.graph.nodes:
        ins = list(dict.fromkeys(alias[a.name] for a in node.all_input_nodes))
        c = channels(node)
        if node.op == "placeholder":
            placeholder = node.name
            box = Box(node.name, "input", [f"input ({c} maps)" if c else "input"])
        elif node.op == "output":
            box = Box(node.name, "output", [f"output ({channels(node.all_input_nodes[0])} maps)"], ins)
        elif node.op == "call_module":
            kind_label = module_box(mods[node.target])
            if kind_label is None:  # identity: the next node reads its input directly
                alias[node.name] = ins[0]
                continue
            kind, label = kind_label
            box = Box(node.name, kind, [label], ins)
        elif node.op == "call_function" and node.target in CAT_FNS:
            parts = [channels(a) for a in node.args[0]]
            detail = "+".join(str(p) for p in parts) + f" -> {c}" if None not in parts and c else ""
            box = Box(node.name, "concat", ["concat", detail], ins)
        elif node.op == "call_function" and node.target in ADD_FNS:
            box = Box(node.name, "add", ["add", f"{c} maps" if c else ""], ins, residual=placeholder in ins)
        elif node.op == "call_function" and node.target in (torch.relu, nn.functional.relu):
            box = Box(node.name, "act", ["ReLU"], ins)
        else:
            box = Box(node.name, "other", [getattr(node.target, "__name__", str(node.target))], ins)
        box.lines = [line for line in box.lines if line]
        alias[node.name] = box.id
        out[box.id] = box
    boxes_ = list(out.values())
    _name_merges(boxes_, cfg.model)
    _mark_branches(boxes_, gm)
    return _merge_runs(boxes_)


def _name_merges(bs: list[Box], model: str) -> None:
    """The branch merge gets the paper's equation, the shortcut add is the residual add."""
    eq = MERGE_EQUATION.get(model)
    for b in bs:
        if b.kind == "add" and b.residual:
            b.lines[0] = "residual add"
        elif b.kind in ("add", "concat"):
            n = len(b.inputs)
            b.lines[0] = f"{b.lines[0]} ({eq})" if eq else f"{b.lines[0]} ({n} branches)"


def _mark_branches(bs: list[Box], gm: fx.GraphModule) -> None:
    """Boxes of a top-level submodule whose output feeds a merge beside another submodule's: one branch."""
    top = {n.name: n.target.split(".")[0] for n in gm.graph.nodes if n.op == "call_module"}
    branches: set[str] = set()
    for b in bs:
        if b.kind in ("add", "concat"):
            owners = {top.get(i) for i in b.inputs if top.get(i)}
            if len(owners) >= 2:
                branches |= owners
    for b in bs:
        if top.get(b.id) in branches:
            b.branch = top[b.id]


def _merge_runs(bs: list[Box]) -> list[Box]:
    """Draw conv -> BN -> ReLU (and BN -> ReLU) as one box when each step has a single reader."""
    readers: dict[str, int] = {}
    for b in bs:
        for i in b.inputs:
            readers[i] = readers.get(i, 0) + 1
    follows = {"conv": ("norm", "act"), "norm": ("act",)}
    absorbed: dict[str, str] = {}  # box id -> the box it was drawn into
    for b in bs:
        if b.id in absorbed or b.kind not in follows:
            continue
        head, cur = b, b
        while cur.kind in follows and readers.get(cur.id) == 1:
            users = [u for u in bs if cur.id in u.inputs]
            u = users[0]
            if u.kind not in follows[cur.kind] or len(u.inputs) != 1 or u.branch != head.branch:
                break
            head.lines.append(u.lines[0])
            absorbed[u.id] = head.id
            cur = u
        if cur is not head:  # 'conv' over 'BN + ReLU'; a BN run reads 'BN + ReLU' on one line
            keep = 1 if head.kind == "conv" else 0
            head.lines = head.lines[:keep] + [" + ".join(head.lines[keep:])]
    kept = [b for b in bs if b.id not in absorbed]
    for b in kept:
        b.inputs = list(dict.fromkeys(absorbed.get(i, i) for i in b.inputs))
    return kept


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def unit_dot(cfg: ModelConfig) -> str:
    """Graphviz DOT of one unit of `cfg`, top to bottom, each merge's branches side by side in clusters."""
    bs = boxes(cfg)
    title = f"One {cfg.model} unit, width {cfg.width}"
    lines = ["digraph unit {", f"  graph [rankdir=TB, label={_q(title)}, labelloc=t, fontname=Helvetica, "
             "nodesep=0.35, ranksep=0.35, ordering=out];",
             '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=11];',
             "  edge [arrowsize=0.7, fontname=Helvetica, fontsize=10];"]

    def node(b: Box) -> str:
        fill = _q(FILL.get(b.kind, "#ffffff"))
        return f"{_q(b.id)} [label={_q(b.label)}, shape={SHAPE.get(b.kind, 'box')}, fillcolor={fill}];"

    clusters: dict[str, list[Box]] = {}
    for b in bs:
        if b.branch:
            clusters.setdefault(b.branch, []).append(b)
        else:
            lines.append("  " + node(b))
    for i, (name, members) in enumerate(clusters.items()):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label={_q("branch " + name)}; style="rounded,dashed"; color="#888888"; fontsize=10;')
        lines += ["    " + node(b) for b in members]
        lines.append("  }")
    for b in bs:
        for i in b.inputs:
            shortcut = b.residual and b.kind == "add" and any(x.id == i and x.kind == "input" for x in bs)
            lines.append(f"  {_q(i)} -> {_q(b.id)}" + (' [style=dashed, label=" identity"]' if shortcut else "")
                         + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"
