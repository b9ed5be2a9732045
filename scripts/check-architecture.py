#!/usr/bin/env python3
"""Holds the workspace to its layering, run by scripts/test.sh.

1. Crate dependencies point one way: binary (cli/) -> control plane (operator/) -> data plane
   (mesh/) -> shared leaves (mesh/shared/, mesh/transport, agent-image/launch-config). A normal
   dependency may point to its own layer or a lower one; e2e/testenv serves tests only.
2. No module imports another module that (directly or not) imports it back, in any crate.

Exits non-zero naming each violation.
"""
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Highest layer first; the first matching prefix wins.
LAYERS = [
    ("cli/", 4, "binary"),
    ("operator/", 3, "control plane"),
    ("mesh/shared/", 1, "shared leaf"),
    ("mesh/transport", 1, "shared leaf"),
    ("agent-image/", 1, "shared leaf"),
    ("mesh/", 2, "data plane"),
    ("e2e/", 0, "test support"),
]


def layer(path):
    rel = str(pathlib.Path(path).relative_to(ROOT)) + "/"
    for prefix, rank, name in LAYERS:
        if rel.startswith(prefix):
            return rank, name, rel.rstrip("/")
    raise SystemExit(f"{rel}: in no layer; add it to LAYERS in {__file__}")


def check_crates(errors):
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
            cwd=ROOT,
        )
    )
    crates = {p["name"]: pathlib.Path(p["manifest_path"]).parent for p in meta["packages"]}
    for package in meta["packages"]:
        rank, name, rel = layer(pathlib.Path(package["manifest_path"]).parent)
        if rank == 0:
            continue  # Test support may drive any layer.
        for dep in package["dependencies"]:
            if dep["name"] not in crates or dep["kind"] == "dev":
                continue
            dep_rank, dep_name, dep_rel = layer(crates[dep["name"]])
            if dep_rank == 0 and not package["name"].endswith("-bench"):
                errors.append(f"{rel} depends on test support {dep_rel} outside dev-dependencies")
            elif dep_rank > rank:
                errors.append(f"{rel} ({name}) depends on {dep_rel} ({dep_name}), a higher layer")


def module_of(src, file):
    """`a::b` for src/a/b.rs or src/a/b/mod.rs; `` for lib.rs/main.rs."""
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


USE = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\buse crate::\{([^;]*)\};", re.S)


def strip_tests(text):
    # Test modules may use anything; they are not part of the layering.
    index = text.find("#[cfg(test)]\nmod tests")
    return text if index < 0 else text[:index]


def check_modules(errors):
    for src in sorted(ROOT.glob("**/src")):
        if "target" in src.parts or "node_modules" in src.parts or not (src.parent / "Cargo.toml").exists():
            continue
        # Published crates carried with a patch (mesh/vendor) are upstream's layering, not ours.
        if src.relative_to(ROOT).parts[:2] == ("mesh", "vendor"):
            continue
        files = sorted(src.rglob("*.rs"))
        modules = {module_of(src, f) for f in files}
        edges = {}
        for f in files:
            here = module_of(src, f)
            text = strip_tests(f.read_text())
            paths = USE.findall(text)
            for group in GROUP.findall(text):
                paths += [p.strip().split("::")[0] for p in group.split(",")]
            targets = set()
            for path in paths:
                parts = path.split("::")
                # The longest prefix that is a module of this crate.
                for end in range(len(parts), 0, -1):
                    candidate = "::".join(parts[:end])
                    if candidate in modules:
                        break
                else:
                    continue
                # A module using its own submodule, or a submodule its parent, is one unit.
                if candidate and candidate != here and not candidate.startswith(here + "::") and not here.startswith(candidate + "::"):
                    targets.add(candidate)
            edges[here] = targets
        for cycle in cycles(edges):
            crate = src.parent.relative_to(ROOT)
            errors.append(f"{crate}: module cycle {' -> '.join(cycle + [cycle[0]])}")


def cycles(edges):
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    errors = []
    check_crates(errors)
    check_modules(errors)
    for error in errors:
        print(f"architecture: {error}", file=sys.stderr)
    if errors:
        return 1
    print("architecture: crates point one way, no module cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
