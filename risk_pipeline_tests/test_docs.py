"""The repository explains itself: docs/architecture.md matches the code and nothing points outside the repository."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from risk_pipeline.contracts import TABLES, contracts_markdown

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
REGENERATE = ".venv/bin/python docs/update_contracts.py"
#: References to files outside the repository (built from parts so this file does not contain them).
FORBIDDEN = ("../" + "shared", "DESIGN" + ".md")


def _update_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("update_contracts", ROOT / "docs" / "update_contracts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _between(text: str, begin: str, end: str) -> str:
    assert text.count(begin) == 1 and text.count(end) == 1, f"expected one {begin} and one {end}"
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_contracts_section_matches_contracts_py() -> None:
    script = _update_script()
    section = script.generated_section(ARCHITECTURE.read_text(encoding="utf-8"))
    assert section == "\n\n" + contracts_markdown() + "\n", (
        "docs/architecture.md's table contracts differ from risk_pipeline/contracts.py: "
        f"regenerate them with `{REGENERATE}` (it rewrites only the part between the contracts markers)"
    )


def test_contracts_markdown_lists_every_table_and_column() -> None:
    md = contracts_markdown()
    headings = re.findall(r"^### `([a-z0-9_]+)`$", md, flags=re.MULTILINE)
    assert headings == list(TABLES)
    for t in TABLES.values():
        block = md.split(f"### `{t.name}`\n", 1)[1].split("\n### ", 1)[0]
        assert f"- key: {', '.join(f'`{k}`' for k in t.key)}" in block
        for c in t.columns:
            assert f"| `{c.name}` | {c.type} | {'yes' if c.nullable else 'no'} |" in block, (t.name, c.name)
    audit = md.split("### `audit_trail`\n", 1)[1].split("\n### ", 1)[0]
    assert "append-only" in audit


def test_update_script_rewrites_only_the_section() -> None:
    script = _update_script()
    text = f"intro\n{script.BEGIN}\nstale\n{script.END}\noutro\n"
    new = script.updated(text)
    assert new.startswith(f"intro\n{script.BEGIN}\n\n") and new.endswith(f"\n{script.END}\noutro\n")
    assert script.generated_section(new) == script.expected_section()


def test_every_table_is_placed_in_the_layer_overview_and_none_is_still_planned() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    prose = text.split("<!-- contracts:begin -->", 1)[0]
    planned = _between(prose, "<!-- planned:begin -->", "<!-- planned:end -->")
    overview = prose.split("<!-- planned:begin -->", 1)[0]
    unplaced = [name for name in TABLES if f"`{name}`" not in overview]
    assert not unplaced, (
        f"tables with a contract missing from 'Layers and data flow' of docs/architecture.md: {unplaced}"
    )
    landed = sorted(set(re.findall(r"`([a-z0-9_]+)`", planned)) & set(TABLES))
    assert not landed, f"docs/architecture.md lists as planned tables that now have a contract: {landed}; move them"


def _repository_files() -> list[Path]:
    """Tracked files plus untracked files that are not ignored."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("git or the .git folder is missing")
        pytest.skip("not a git checkout (git or .git missing): cannot list the repository's files")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in sorted(set(out.decode().split("\0"))) if name]


def test_nothing_refers_to_files_outside_the_repository() -> None:
    offending = []
    for path in _repository_files():
        if not path.is_file():  # deleted in the working tree
            continue
        data = path.read_bytes()
        for needle in FORBIDDEN:
            if needle.encode() in data:
                offending.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offending, f"files refer to documents outside the repository: {offending}"


def test_readme_links_the_architecture_document() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/architecture.md" in readme
    assert ARCHITECTURE.is_file()


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved, nested ones included)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
            else:
                names.add(node.module or "")
    return names


def test_quant_core_imports_nothing_outside_it() -> None:
    """quant/ never imports defs/, sources/, warehouse.py or any other part of the package, nor Dagster or a driver."""
    forbidden = ("dagster", "duckdb", "psycopg", "sqlalchemy")
    bad = []
    for path in sorted((ROOT / "risk_pipeline" / "quant").rglob("*.py")):
        for name in _imported_modules(path):
            top = name.split(".")[0]
            inside = name == "risk_pipeline.quant" or name.startswith("risk_pipeline.quant.")
            if (top == "risk_pipeline" and not inside) or top in forbidden:
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, f"the quant core must stay pure: {bad}"
