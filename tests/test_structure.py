"""The shape of the code: no import cycle among our modules (imports inside functions count too), no
module of core/ over 500 lines, core/ never imports streamlit, pages/ lists only pages."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_CORE_LINES = 500


def our_modules() -> dict[str, Path]:
    files = [ROOT / "app.py", *(ROOT / "core").rglob("*.py"), *(ROOT / "pages").rglob("*.py")]
    modules = {}
    for path in files:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that module `name` imports, anywhere in it (a lazy import can close a cycle too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # A package's __init__ runs before its modules: importing `core.runs.store` imports
            # `core.runs` too, but that is not a dependency of the module on its own package.
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    modules = our_modules()
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert "core.runs.store" in graph["core.training.worker"]      # the walk sees imports at all
    assert cycles(graph) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_core_module_is_over_500_lines():
    long = {str(path.relative_to(ROOT)): n for path in (ROOT / "core").rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_CORE_LINES}
    assert long == {}


def test_core_never_imports_streamlit():
    modules = our_modules()
    for name, path in modules.items():
        if name.startswith("core"):
            tree = ast.parse(path.read_text())
            names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
            names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
            assert not any(n.split(".")[0] == "streamlit" for n in names), path


def test_pages_lists_the_pages_only():
    """Helpers live in pages/common/; every file of pages/ is a page the navigation lists."""
    from pages.common.site import PAGES
    pages = {path.stem for path in (ROOT / "pages").glob("*.py") if path.name != "__init__.py"}
    assert pages == {page.name for page in PAGES}
