"""Tenants never see each other's data: an org whose events repeat another's, every id
the same (workspaces, chats, members, users, sessions, traces, events), changes none of
that org's answers, on either store."""

from __future__ import annotations

import pytest

from parley.store.port import open_store
from tests.conftest import STORE_KINDS, store_url_for
from tests.test_arrival_order import answers, reference  # noqa: F401 (a fixture)
from tests.test_equivalence import in_order, loaded_clients


def with_a_twin(by_org: dict[str, list]) -> list[tuple[str, list]]:
    """The first org's events, then the same events again for an org of their own: each
    batch of the first org followed by its twin's, so both grow together."""
    first = next(iter(by_org))
    batches = []
    for org, batch in in_order({first: by_org[first]}):
        batches += [(org, batch), ("twin", batch)]
    return batches


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_an_org_whose_events_repeat_anothers_changes_none_of_its_answers(reference, tmp_path, kind):  # noqa: F811
    urls, expected = reference
    url = store_url_for(kind, tmp_path)
    loading = loaded_clients({kind: (url, open_store(url))}, with_a_twin)
    (stores, ws, by_org, keys) = next(loading)
    try:
        assert ws.org == next(iter(by_org)) and ("twin" in {org for _, org in keys})
        client, key = stores[kind]
        got = answers(client, key, urls)
    finally:
        next(loading, None)
    for url in urls:
        assert got[url] == expected[url], url
