# SPDX-License-Identifier: GPL-3.0-or-later
"""Bookkeeping of the datablocks one import creates, so a failed import leaves nothing behind
and a later import of the same bundle can replace this one.

Every datablock an import creates carries the ID property ``TAG`` = the import's id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bpy

TAG = "troupe_import"
BUNDLE_KEY = "troupe_bundle"  # on the import's top collection: the bundle folder it came from

# bpy.data collections an import may create datablocks in, removal order (users first).
_COLLECTIONS = (
    "objects", "collections", "meshes", "armatures", "cameras", "lights", "pointclouds",
    "actions", "materials", "node_groups", "images", "movieclips", "worlds",
)  # fmt: skip


class Created:
    """Datablocks made by one import, tagged with its id.

    It also remembers which datablocks existed when it was made, so ``remove_all`` after a
    failure removes whatever appeared since, tagged or not (a half-built node group, an
    image loaded on the way) and leaves no orphans.
    """

    def __init__(self, import_id: str | None = None):
        self.import_id = import_id or uuid.uuid4().hex
        self.ids: list[bpy.types.ID] = []
        self._before = _session_uids()

    def add(self, datablock: Any) -> Any:
        datablock[TAG] = self.import_id
        self.ids.append(datablock)
        return datablock

    def tag_new(self) -> None:
        """Tag every datablock created since this object was made (and not yet tagged)."""
        for attr in _COLLECTIONS:
            for d in getattr(bpy.data, attr, ()):
                if d.session_uid not in self._before and _prop(d) != self.import_id:
                    self.add(d)

    def remove_all(self) -> None:
        """Remove everything made since this object was created."""
        remove_tagged(self.import_id)
        for attr in _COLLECTIONS:
            coll = getattr(bpy.data, attr, None)
            if coll is None:
                continue
            for d in [d for d in coll if d.session_uid not in self._before]:
                coll.remove(d)
        self.ids.clear()


def _prop(datablock: Any, key: str = TAG) -> Any:
    """An ID property of a datablock (None where unset)."""
    return datablock.get(key)


def _session_uids() -> set[int]:
    out: set[int] = set()
    for attr in _COLLECTIONS:
        out.update(d.session_uid for d in getattr(bpy.data, attr, ()))
    return out


@contextmanager
def all_or_nothing() -> Iterator[Created]:
    """Everything created inside the block is tagged as one import on success, and removed
    (tagged or not) when the block raises."""
    created = Created()
    try:
        yield created
        created.tag_new()
    except BaseException:
        created.remove_all()
        raise


def remove_tagged(import_id: str) -> int:
    """Remove every datablock tagged with ``import_id``; returns how many."""
    removed = 0
    for attr in _COLLECTIONS:
        coll = getattr(bpy.data, attr, None)
        if coll is None:
            continue
        for datablock in [d for d in coll if d.get(TAG) == import_id]:
            coll.remove(datablock)
            removed += 1
    return removed


def imports_of_bundle(path: str) -> list[bpy.types.Collection]:
    """Top collections of earlier imports of the bundle folder ``path``."""
    return [c for c in bpy.data.collections if _prop(c, BUNDLE_KEY) == path and _prop(c, TAG)]


def all_datablocks() -> set[tuple[str, str]]:
    """(collection, name) of every datablock an import could create (for orphan checks)."""
    out: set[tuple[str, str]] = set()
    for attr in _COLLECTIONS:
        coll = getattr(bpy.data, attr, None)
        if coll is not None:
            out.update((attr, d.name) for d in coll)
    return out
