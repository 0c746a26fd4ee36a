"""The examples in marl's docstrings run and print what they say (every module that has one)."""

import doctest
import importlib
from pathlib import Path

import pytest

MARL = Path(__file__).resolve().parents[1] / "marl"
MODULES = sorted(
    ".".join(p.relative_to(MARL.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in MARL.rglob("*.py")
    if ">>>" in p.read_text()
)


def test_the_docstring_examples_are_found():
    assert len(MODULES) >= 3, MODULES  # AgentNet, TwinMLP, ... carry examples


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
