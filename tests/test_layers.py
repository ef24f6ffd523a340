"""The layers of DESIGN.md, read from the imports in the tree: each part imports only what is below it."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# part -> top-level packages it must never import
FORBIDDEN = {
    "rtrec": {"cli", "serving", "flows", "model", "bench"},
    "model": {"cli", "serving", "flows", "bench"},
    "serving": {"cli", "flows", "bench", "prefect", "prefect_dbt", "dbt"},
    "flows": {"cli", "serving", "bench"},
    "bench": {"cli", "serving"},
}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_each_part_imports_only_what_is_below_it(part):
    files = sorted((ROOT / part).rglob("*.py"))
    assert files, f"no Python files under {part}/"
    crossings = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imported_packages(path) & FORBIDDEN[part]
    }
    assert not crossings, "\n".join(sorted(crossings))
