"""The package layout's dependency directions (docs/architecture.md, "Packages"), read from every import
statement of rlvr_jax/, at the top of a module or inside a function.

The trainer (rlvr_jax/trainer/, rlvr_jax/train.py) is built from the model, rollout, rewards, data and objectives
packages and is imported by none of them; data -> rewards is the only direction between those two; the mesh and
rule set (rlvr_jax/sharding.py) and the typed batch (rlvr_jax/batch.py) import no config, trainer or data.
"""
from __future__ import annotations

import ast
import pathlib
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "rlvr_jax"


def _imports(path: pathlib.Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package)."""
    package = ["rlvr_jax", *path.relative_to(PKG).parent.parts]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)  # `from rlvr_jax import trainer`
    return names


def _modules(*parts: str) -> list[pathlib.Path]:
    root = PKG.joinpath(*parts)
    return [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))


def _offenders(sources: list[pathlib.Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(PKG)}: {name}" for p in sources for name in sorted(_imports(p))
            if any(name == f or name.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize("package", ["models", "rollout", "rewards", "data", "objectives", "sharding.py",
                                     "batch.py"])
def test_trainer_inputs_do_not_import_the_trainer(package):
    assert _offenders(_modules(package), ("rlvr_jax.trainer", "rlvr_jax.train")) == []


def test_rewards_import_nothing_from_data():
    """The former datasets <-> reasoning_gym circle, and the code benchmark that lived in rewards/."""
    assert _offenders(_modules("rewards"), ("rlvr_jax.data",)) == []


def test_sharding_and_batch_import_no_config():
    """The former config -> sharding -> config circle: the mesh resolver lives in sharding.py, config wraps it."""
    assert _offenders(_modules("sharding.py") + _modules("batch.py"),
                      ("rlvr_jax.config", "rlvr_jax.data", "rlvr_jax.evaluation")) == []


def test_no_loose_trainer_modules():
    """The top level holds the entry points and the two shared types only; each concept has its package."""
    loose = sorted(p.name for p in PKG.glob("*.py"))
    assert loose == ["__init__.py", "batch.py", "demo.py", "evaluate.py", "sharding.py", "toy.py", "train.py"]


def test_the_offender_finder_sees_relative_and_nested_imports(tmp_path, monkeypatch):
    """The checks above can fail: a relative import inside a function is found and resolved."""
    pkg = tmp_path / "rlvr_jax"
    (pkg / "models").mkdir(parents=True)
    bad = pkg / "models" / "m.py"
    bad.write_text("def f():\n    from ..trainer import learner\n    from .. import train\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    assert _offenders([bad], ("rlvr_jax.trainer", "rlvr_jax.train")) == [
        "models/m.py: rlvr_jax.train", "models/m.py: rlvr_jax.trainer", "models/m.py: rlvr_jax.trainer.learner"]
