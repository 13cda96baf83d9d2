"""Every docstring example in the three packages runs (River style: examples are tests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import connectors
import models
import streams

MODULES = sorted(
    info.name
    for package in (streams, models, connectors)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
