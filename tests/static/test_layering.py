"""The layering of docs/architecture.md, checked on every import statement (also inside functions).

pipelines/            the DAG and `dal pipeline`: imports steps' component modules and configs
components/<step>/    ingest, train, extract, evaluate, tracking: each may import common, model
                      and another step's library modules, never another step's entry module
components/model/     imports common only
components/common/    imports no other layer
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from components.cli import STEPS

REPO = Path(__file__).resolve().parents[2]
STEP_PACKAGES = ("ingest", "train", "extract", "evaluate", "search", "export", "tracking")
# A step's entry modules: what `dal <step>` runs, its KFP component and `python -m`.
RUNNERS = {s.runner.split(":")[0] for s in STEPS.values()}
ENTRY_MODULES = RUNNERS | {
    f"components.{p}.{m}"
    for p in STEP_PACKAGES
    for m in ("component", "__main__")
    if (REPO / "components" / p / f"{m}.py").exists()
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file, including the imported names' modules."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _package(module: str) -> str:
    """components.<package> of a module name ("" outside components)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "components" and len(parts) > 1 else ""


def violations(path: Path, repo: Path = REPO) -> list[str]:
    relative = path.relative_to(repo)
    owner = relative.parts[1] if relative.parts[0] == "components" and len(relative.parts) > 2 else ""
    found = []
    for line, module in _imports(path):
        target = _package(module)
        where = f"{relative}:{line} imports {module}"
        if module.startswith("pipelines") and relative.parts[0] == "components":
            found.append(f"{where}: components never import the pipeline")
        if not target or target == owner:
            continue
        if owner == "common" and target != "common":
            found.append(f"{where}: common imports no other layer")
        elif owner == "model" and target not in ("common", "model"):
            found.append(f"{where}: model imports common only")
        elif owner in STEP_PACKAGES and module in ENTRY_MODULES:
            found.append(f"{where}: a step never imports another step's entry module")
    return found


def _sources() -> list[Path]:
    return sorted(p for p in (REPO / "components").rglob("*.py"))


def test_every_component_module_respects_the_layers() -> None:
    found = [v for path in _sources() for v in violations(path)]
    assert not found, "\n".join(found)


def test_entry_modules_are_the_registered_ones() -> None:
    for module in RUNNERS:
        assert (REPO / (module.replace(".", "/") + ".py")).exists(), module
    assert {"components.train.run", "components.extract.run", "components.evaluate.run"} <= RUNNERS


@pytest.mark.parametrize(
    ("owner", "source", "reason"),
    [
        ("train", "from components.extract.run import run", "another step's entry module"),
        ("evaluate", "import components.train.component", "another step's entry module"),
        ("model", "from components.train.config import TrainConfig", "model imports common only"),
        ("common", "from components.model import embed", "common imports no other layer"),
        ("train", "def f():\n    from pipelines import cli", "never import the pipeline"),
    ],
)
def test_a_violation_is_reported(tmp_path, owner: str, source: str, reason: str) -> None:
    # The checker on a file placed in the tree's layout under a temporary repository root.
    root = tmp_path / "repo"
    module = root / "components" / owner / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text(source + "\n")
    assert any(reason in v for v in violations(module, root)), violations(module, root)


def test_allowed_imports_are_not_reported(tmp_path) -> None:
    root = tmp_path / "repo"
    module = root / "components" / "train" / "ok.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from components.common import storage\nfrom components.model.embed import embed\n"
        "from components.evaluate.metrics import evaluate_features\nfrom components.train import data\n"
    )
    assert violations(module, root) == []
