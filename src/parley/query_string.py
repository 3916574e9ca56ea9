"""The query string as a whole: each parameter given once, and none a near miss of one
the endpoint takes.

FastAPI reads each declared parameter on its own: a repeated one took its last value,
and an undeclared one was ignored, so ``page_size=10`` or ``startDate=2024-05-01`` gave
the default page or range with a 200, silently, to a client that had it almost right.
Parameters nothing resembles stay ignored: a cache-buster ``_=`` or a tracking tag may
ride along, and the export takes the list's ``page`` without a complaint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from parley.errors import BadRequest


def _shape(name: str) -> str:
    """What a near miss shares with the name: ``pageSize``, ``page_size``, ``PageSize``."""
    return name.replace("_", "").replace("-", "").lower()


def _declared(dependant: Dependant) -> Iterator[str]:
    for field in dependant.query_params:
        yield field.alias
    for dependency in dependant.dependencies:
        yield from _declared(dependency)


_SHAPES: dict[str, dict[str, str]] = {}  # route id -> shape -> the declared name


def _shapes(route: APIRoute) -> dict[str, str]:
    shapes = _SHAPES.get(route.unique_id)
    if shapes is None:
        shapes = _SHAPES[route.unique_id] = {_shape(name): name for name in _declared(route.dependant)}
    return shapes


async def check_query_string(request: Request) -> None:
    """400 for a parameter given more than once, or spelt like one the endpoint takes
    but not as it does."""
    items = request.query_params.multi_items()
    if not items:
        return
    names = Counter(name for name, _ in items)
    for name, count in names.items():
        if count > 1:
            raise BadRequest(f"{name}: given {count} times; give it once")
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    shapes = _shapes(route)
    for name in names:
        meant = shapes.get(_shape(name))
        if meant is not None and meant != name:
            raise BadRequest(f"{name}: not a parameter of this endpoint; did you mean {meant}?")
