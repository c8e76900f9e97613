"""One-way layers: every xomni module imports only its own layer or layers below it, and nothing imports in a cycle.

The layers, lowest first (a module belongs to the longest prefix that names it):

    core      errors, utils, cliargs, config, checkpoint + modeling (save/load), hwbench, the shared training loop
              (and its FSDP)
    data      synthetic data, dataset storage, presets, the text tokenizer
    metrics   OCR, text metrics, LongText-Bench rule, FID, the compliance judge (and `xomni data check`)
    tokenizer the image tokenizer
    models    the AR model and the diffusion decoder (and the AR's LoRA adapters): peers that never import each other
    pipeline  Pipeline: the components together
    eval      the evaluation harness that runs a Pipeline
    tuning    RL and LoRA training on a Pipeline
    serve     the HTTP server
    cli       the commands (`cli.py` and `*_cli.py` modules, demo, recipe, benches)

Imports are read with `ast` from the source, inside functions too, so a deferred import counts like any other.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "xomni"

LAYERS = [
    ("core", ["xomni", "xomni.errors", "xomni.utils", "xomni.cliargs", "xomni.config", "xomni.checkpoint",
              "xomni.modeling", "xomni.hwbench", "xomni.train", "xomni.fsdp"]),
    ("data", ["xomni.data"]),
    ("metrics", ["xomni.metrics", "xomni.data.check"]),
    ("tokenizer", ["xomni.tokenizer"]),
    ("models", ["xomni.ar", "xomni.decoder", "xomni.lora.adapter", "xomni.xomni_arch", "xomni.convert"]),
    ("pipeline", ["xomni.pipeline"]),
    ("eval", ["xomni.eval"]),
    ("tuning", ["xomni.rl", "xomni.lora"]),
    ("serve", ["xomni.serve"]),
    ("cli", ["xomni.cli", "xomni.recipe", "xomni.demo", "xomni.memory", "xomni.ar.bench", "*.cli"]),
]
# units of one layer that must not import each other (each stands on the layers below alone)
PEERS = {"models": [["xomni.ar"], ["xomni.decoder"]]}


def module_names() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports_of(name: str, path: Path, modules: dict) -> list[tuple[str, int]]:
    """(imported xomni module, line) for every import statement of the module, wherever it stands."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in modules and t != name:
                out.append((t, node.lineno))
    return out


def layer_of(name: str) -> tuple[int, str]:
    """(layer index, the prefix that placed it): the longest matching prefix; `*.cli` is any module named `cli`
    or `*_cli` (a command module), wherever it stands."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if pre == "*.cli":
                hit = name.endswith((".cli", "_cli"))
            elif pre == "xomni":
                hit = name == "xomni"
            else:
                hit = name == pre or name.startswith(pre + ".")
            if hit and (best is None or len(pre) > len(best[1]) or pre == "*.cli"):
                best = (i, pre)
    assert best is not None, f"{name} is in no layer: add it to LAYERS in tests/test_layers.py"
    return best


def graph() -> tuple[dict, dict[str, set[str]]]:
    modules = module_names()
    edges: dict[str, set[str]] = defaultdict(set)
    lines = {}
    for name, path in modules.items():
        for t, line in imports_of(name, path, modules):
            edges[name].add(t)
            lines.setdefault((name, t), line)
    return lines, edges


def strongly_connected(nodes, edges) -> list[set[str]]:
    """Tarjan's components with more than one node (each one is a cycle or several)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for name in module_names():
        layer_of(name)


def test_no_module_imports_a_layer_above_its_own():
    lines, edges = graph()
    bad = []
    for a, targets in edges.items():
        la, _ = layer_of(a)
        for b in targets:
            lb, _ = layer_of(b)
            if lb > la:
                bad.append(f"{a} ({LAYERS[la][0]}) imports {b} ({LAYERS[lb][0]}), line {lines[(a, b)]}")
    assert not bad, "imports of a higher layer:\n" + "\n".join(sorted(bad))


def test_peers_do_not_import_each_other():
    lines, edges = graph()
    bad = []
    for layer, units in PEERS.items():
        def unit(name):
            return next((i for i, u in enumerate(units) for pre in u if name == pre or name.startswith(pre + ".")),
                        None)
        for a, targets in edges.items():
            for b in targets:
                ua, ub = unit(a), unit(b)
                if ua is not None and ub is not None and ua != ub:
                    bad.append(f"{a} imports its {layer} peer {b}, line {lines[(a, b)]}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    _, edges = graph()
    cycles = strongly_connected(module_names(), edges)
    assert not cycles, "import cycles between modules: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_no_package_cycles():
    """The units of the layer map (a package such as xomni.eval, or a module the map places on its own) do not
    import each other in a circle either: a cycle of packages hides behind acyclic modules."""
    _, edges = graph()

    def unit(name):
        pre = layer_of(name)[1]
        return name if pre == "*.cli" else pre
    uedges: dict[str, set[str]] = defaultdict(set)
    for a, targets in edges.items():
        for b in targets:
            if unit(a) != unit(b):
                uedges[unit(a)].add(unit(b))
    cycles = strongly_connected({unit(m) for m in module_names()}, uedges)
    assert not cycles, "import cycles between packages: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_checks_catch_what_they_should():
    """The rules themselves: an upward import and a cycle are found."""
    assert layer_of("xomni.tokenizer.metrics")[0] < layer_of("xomni.pipeline")[0] < layer_of("xomni.eval.text")[0]
    assert layer_of("xomni.metrics.ocr")[0] < layer_of("xomni.tokenizer.model")[0]
    assert layer_of("xomni.rl.cli")[0] == layer_of("xomni.cli")[0] == len(LAYERS) - 1
    assert strongly_connected({"a", "b", "c"}, {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [{"a", "b", "c"}]
    assert strongly_connected({"a", "b"}, {"a": {"b"}}) == []
