"""docs/ARCHITECTURE.md is kept true: every import in sentembed/ follows its layer rules, and
its file table names every file of the package (and no file that is gone).

Every import counts as an arrow: at module level, inside a function (a lazy import), under
`if TYPE_CHECKING:`, absolute or relative."""
from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sentembed"
DOCUMENT = ROOT / "docs" / "ARCHITECTURE.md"


@dataclass(frozen=True)
class Layer:
    name: str
    patterns: tuple[str, ...]  # file paths relative to sentembed/, shell patterns
    may_import: frozenset[str]  # other layers; "*" for any


@dataclass(frozen=True)
class Arrow:
    file: str  # relative to sentembed/
    line: int
    target: str  # the module imported, e.g. sentembed.search.index
    statement: str


def read_layers(text: str) -> list[Layer]:
    """The fenced ```layers block: `name  files...  : may import...` per line."""
    block = re.search(r"^```layers\n(.*?)^```", text, re.S | re.M)
    assert block, f"{DOCUMENT} has no ```layers block"
    layers = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        left, _, right = line.partition(":")
        name, *patterns = left.split()
        allowed = frozenset(w.strip(",") for w in right.split() if w.strip(",") not in ("-", ""))
        layers.append(Layer(name, tuple(patterns), allowed))
    return layers


def read_file_table(text: str) -> set[str]:
    """Files named in the first column of the document's tables: | `search/index.py` | ... |"""
    return set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.M))


def layer_of(relative: str, layers: list[Layer]) -> Layer | None:
    return next((layer for layer in layers if any(fnmatch.fnmatchcase(relative, p) for p in layer.patterns)), None)


def module_file(module: str) -> str | None:
    """sentembed.search.index -> search/index.py; a package -> its __init__.py."""
    parts = module.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return "/".join(parts) + ".py"
    if (base / "__init__.py").is_file():
        return "/".join([*parts, "__init__.py"])
    return None


def arrows(path: Path, relative: str) -> list[Arrow]:
    """Every import of sentembed in one file (at sentembed/<relative>), with the module each one reaches."""
    module = ".".join(["sentembed", *Path(relative).with_suffix("").parts])
    package = module.removesuffix(".__init__") if relative.endswith("__init__.py") else module.rsplit(".", 1)[0]
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from sentembed import search` reaches the submodule, not the package's __init__.
            targets = [f"{origin}.{a.name}" if module_file(f"{origin}.{a.name}") else origin for a in node.names]
        else:
            continue
        statement = ast.get_source_segment(text, node) or ""
        found += [Arrow(relative, node.lineno, t, statement) for t in dict.fromkeys(targets)
                  if t == "sentembed" or t.startswith("sentembed.")]
    return found


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def document() -> str:
    return DOCUMENT.read_text(encoding="utf-8")


def test_every_import_follows_the_layer_rules(document):
    layers = read_layers(document)
    names = {layer.name for layer in layers}
    for layer in layers:
        unknown = layer.may_import - names - {"*"}
        assert not unknown, f"layer {layer.name} may import unknown layer(s) {sorted(unknown)}"
    problems = []
    for path in package_files():
        relative = path.relative_to(PACKAGE).as_posix()
        source = layer_of(relative, layers)
        if source is None:
            problems.append(f"sentembed/{relative}: in no layer of the ```layers block")
            continue
        for arrow in arrows(path, relative):
            target_file = module_file(arrow.target)
            if target_file is None:
                problems.append(f"sentembed/{relative}:{arrow.line}: imports {arrow.target}, which is not a module")
                continue
            target = layer_of(target_file, layers)
            if target is None or target.name == source.name or "*" in source.may_import:
                continue
            if target.name not in source.may_import:
                problems.append(f"sentembed/{relative}:{arrow.line}: {source.name} -> {target.name} is against the "
                                f"rules ({arrow.statement.splitlines()[0]}); {source.name} may import: "
                                f"{', '.join(sorted(source.may_import)) or 'nothing of the package'}")
    assert not problems, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(problems)


def test_the_file_table_names_every_file(document):
    listed = read_file_table(document)
    present = {p.relative_to(PACKAGE).as_posix() for p in package_files()}
    missing, gone = sorted(present - listed), sorted(listed - present)
    assert not missing, f"files of sentembed/ missing from the table in docs/ARCHITECTURE.md: {missing}"
    assert not gone, f"docs/ARCHITECTURE.md lists files that are not in sentembed/: {gone}"


def test_the_reader_sees_lazy_and_relative_imports(tmp_path):
    """The checker itself: a function-level relative import is an arrow, resolved from the file's package."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from ..search import Index\n    from . import metrics\n", encoding="utf-8")
    targets = [(a.line, a.target) for a in arrows(path, "evaluation/probe.py")]
    assert targets == [(2, "sentembed.search"), (3, "sentembed.evaluation.metrics")]
