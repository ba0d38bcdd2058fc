"""Bad bundles are refused before anything is created; failures leave nothing behind; re-imports
replace or add as asked."""

from __future__ import annotations

import json
import shutil

import bpy
import numpy as np
import pytest

from troupe.addon import datablocks, gsplat, importer
from troupe.core import bundle


def test_invalid_bundle_is_refused_before_anything_is_created(fresh_scene, small_bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_bundle, broken)
    meta = json.loads((broken / "bundle.json").read_text())
    meta["up_axis"] = "+Z"
    (broken / "bundle.json").write_text(json.dumps(meta))
    np.savez(broken / "people" / "p1" / "rig.npz", joints=np.zeros((12, 3)))
    before = datablocks.all_datablocks()
    with pytest.raises(bundle.BundleError) as err:
        importer.import_bundle(broken)
    assert datablocks.all_datablocks() == before
    text = "\n".join(err.value.problems)
    assert "up_axis" in text  # the validator's own message, naming the field
    assert err.value.problems == bundle.validate(broken)


def test_missing_folder_and_unknown_person(fresh_scene, small_bundle, tmp_path):
    with pytest.raises(bundle.BundleError, match="bundle.json"):
        importer.import_bundle(tmp_path)
    before = datablocks.all_datablocks()
    with pytest.raises(bundle.BundleError, match="no person 'nobody'"):
        importer.import_bundle(small_bundle, importer.ImportSettings(people=["p0", "nobody"]))
    assert datablocks.all_datablocks() == before


def test_a_failure_half_way_leaves_no_orphans(fresh_scene, small_bundle, monkeypatch):
    before = datablocks.all_datablocks()

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure after the first person")

    # the camera comes after every person, their meshes, splats, node groups and materials
    monkeypatch.setattr(importer.camera, "create_camera", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        importer.import_bundle(small_bundle)
    assert datablocks.all_datablocks() == before
    assert not bpy.context.scene.collection.children


def test_replace_or_add_beside(fresh_scene, small_bundle):
    first = importer.import_bundle(small_bundle)
    n_objects = len(bpy.data.objects)
    second = importer.import_bundle(small_bundle)  # replace (default)
    assert len(bpy.data.objects) == n_objects
    assert len(datablocks.imports_of_bundle(str(small_bundle.resolve()))) == 1
    assert second.import_id != first.import_id
    importer.import_bundle(small_bundle, importer.ImportSettings(replace=False))
    assert len(bpy.data.objects) == 2 * n_objects
    assert len(datablocks.imports_of_bundle(str(small_bundle.resolve()))) == 2
    # nothing of the replaced import is left, not even unused data
    tag = first.import_id
    assert not [d for attr in ("meshes", "armatures", "actions", "materials", "node_groups", "cameras", "images")
                for d in getattr(bpy.data, attr) if d.get(datablocks.TAG) == tag]  # fmt: skip


def test_options_select_people_and_parts(fresh_scene, small_bundle):
    settings = importer.ImportSettings(people=["p1"], splats=False, mesh=False, camera=False)
    result = importer.import_bundle(small_bundle, settings)
    assert list(result.people) == ["p1"]
    objs = result.people["p1"]
    assert objs.armature is not None and objs.body is None and objs.splats is None
    assert result.camera is None
    assert not [g for g in bpy.data.node_groups if g.name.startswith(gsplat.DISPLAY_GROUP)]
    # without armatures the meshes stay in the rest pose
    result = importer.import_bundle(small_bundle, importer.ImportSettings(armature=False))
    body = result.people["p0"].body
    assert body.parent is None and not body.modifiers
    b = bundle.read_bundle(small_bundle)
    co = np.empty(len(body.data.vertices) * 3)
    body.data.vertices.foreach_get("co", co)
    assert np.allclose(co.reshape(-1, 3), importer.axes.Y_UP.points(b.people[0].rig.vertices), atol=1e-6)
