"""FastAPI dependencies: every one is async, so no request pays a worker-thread hop to look one up."""

from __future__ import annotations

import inspect
import typing

from fastapi.params import Depends

from service import deps


def test_every_dependency_is_a_coroutine_function() -> None:
    aliases = {name: value for name, value in vars(deps).items() if name.endswith("Dep")}
    assert len(aliases) >= 4
    for name, alias in aliases.items():
        markers = [m for m in typing.get_args(alias)[1:] if isinstance(m, Depends)]
        assert markers, f"{name} carries no Depends()"
        dependency = markers[0].dependency
        assert inspect.iscoroutinefunction(dependency), f"{name}: {dependency} runs in a worker thread"
