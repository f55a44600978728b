"""The catalog remembers what requests look up, and an answer grown old is
read again after the request that found it, never before it: a change made
through another queen on the same database (here: the row written directly)
reaches the next request, and a request never waits for the database once its
model was looked up. Real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import Database

from rbee_queen import deferred
from rbee_queen.errors import ModelNotFound
from rbee_queen.models.catalog import ModelCatalog
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import ModelEntry, Node


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[ModelCatalog]:
    database: Database = open_database(tmp_path / "queen.db")
    Node.create(name="n1", ssh_host="h", ssh_user="u", ssh_key_path="", install_path="/i")
    Node.create(name="n2", ssh_host="h", ssh_user="u", ssh_key_path="", install_path="/i")
    catalog = ModelCatalog(max_age_s=0.0)  # every answer is old at once
    catalog.add("tiny", "hf:Org/Tiny", ["n1"], slots=2)
    yield catalog
    database.close()


def moved_elsewhere() -> None:
    """What another queen's change looks like to this one: the row, rewritten."""
    ModelEntry.update(nodes=["n2"], slots=3).where(ModelEntry.name == "tiny").execute()


async def test_an_old_answer_is_read_again_after_the_request_that_found_it(
    catalog: ModelCatalog,
) -> None:
    assert catalog.placement("tiny", None, None).nodes == ["n1"]
    moved_elsewhere()
    # The request that finds the answer old gets it as it was: no read on its path.
    assert catalog.placement("tiny", None, None).nodes == ["n1"]
    await asyncio.sleep(deferred.DELAY_S * 5)  # a moment later: the read
    placed = catalog.placement("tiny", None, None)
    assert (placed.nodes, placed.slots) == (["n2"], 3)


async def test_a_model_removed_elsewhere_is_not_found_from_the_next_request_on(
    catalog: ModelCatalog,
) -> None:
    assert catalog.placement("tiny", None, None).model_ref == "hf:Org/Tiny"
    ModelEntry.delete().where(ModelEntry.name == "tiny").execute()
    catalog.placement("tiny", None, None)  # the old answer; the read is queued
    await asyncio.sleep(deferred.DELAY_S * 5)
    with pytest.raises(ModelNotFound):
        catalog.placement("tiny", None, None)


def test_without_an_event_loop_an_old_answer_is_read_at_once(catalog: ModelCatalog) -> None:
    assert catalog.placement("tiny", None, None).nodes == ["n1"]
    moved_elsewhere()
    assert catalog.placement("tiny", None, None).nodes == ["n2"]
