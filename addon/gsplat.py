# SPDX-License-Identifier: GPL-3.0-or-later
"""Gaussian splats in Blender: point meshes, skinning and display through Geometry Nodes.

A splat object (see ``splat_math``) carries two Geometry Nodes modifiers:

1. "Troupe Splat Skinning" (people only): linear blend skinning of each centre and of its two
   axes with the Gaussian's own joints and weights, exactly ``core.bundle.skin_points``. The
   joints' transforms come from a small companion mesh, the person's *joint frames*: four
   vertices per joint (its rest head and head + x, + y, + z, one metre apart) bound with weight
   1 to that joint's bone by an Armature modifier. Posed, vertex 4j is the joint's head and the
   three differences are the columns of its rotation, so the node tree recovers every joint's
   transform and blends it per splat. This costs nothing at import (no per-point vertex groups:
   a Python call per vertex and weight would take seconds for 100k splats) and follows the
   armature live.
2. "Troupe Splats" (display): an ico-sphere instance per Gaussian, rotated by the two axes,
   scaled by its standard deviations times ``Size`` (3 = the 3-sigma ellipsoid), with the
   "Troupe Splat" material; or, with ``Points`` on, a light point cloud for large scenes.

The material is emission with colour ``splat_color`` and an alpha that falls off over the
ellipsoid like the Gaussian: with c = N.I on a front face (1 at the centre of the silhouette,
0 at its rim) the ray crosses the unit sphere at radius r^2 = 1 - c^2 from the centre, and the
alpha is ``splat_alpha * exp(-Size^2 r^2 / 2)``; back faces are transparent. It renders in
Cycles and EEVEE (dithered transparency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ..core import bundle
from . import axes, compat
from .blender_mesh import new_mesh, set_point_attribute
from .datablocks import Created, all_or_nothing
from .nodes import TreeBuilder, new_geometry_group
from .splat_math import SplatPoints, splat_points

SKIN_GROUP = "Troupe Splat Skinning"
JOINT_GROUP = "Troupe Splat Joint"
DISPLAY_GROUP = "Troupe Splats"
MATERIAL = "Troupe Splat"
POINT_MATERIAL = "Troupe Splat Points"
REST_ATTR = "troupe_rest"
DEFAULT_SIZE = 3.0


# --------------------------------------------------------------------------------------
# Node groups
# --------------------------------------------------------------------------------------


def _joint_group() -> bpy.types.NodeTree:
    """Weighted contribution of one joint to a splat's position and axes."""
    groups: Any = bpy.data.node_groups
    tree = groups.new(JOINT_GROUP, "GeometryNodeTree")
    iface: Any = tree.interface
    for name, kind in (("Frames", "Geometry"), ("Joint", "Int"), ("Weight", "Float"), ("Position", "Vector"),
                       ("Axis X", "Vector"), ("Axis Y", "Vector")):  # fmt: skip
        iface.new_socket(name, in_out="INPUT", socket_type=f"NodeSocket{kind}")
    for name in ("Position", "Axis X", "Axis Y"):
        iface.new_socket(name, in_out="OUTPUT", socket_type="NodeSocketVector")
    b = TreeBuilder(tree)
    gin = b.node("NodeGroupInput")
    gout = b.node("NodeGroupOutput")
    position = b.out(b.node("GeometryNodeInputPosition"))
    base = b.math("MULTIPLY", b.out(gin, "Joint"), 4.0)

    def sample(value: Any, index: Any) -> Any:
        node = b.node("GeometryNodeSampleIndex", data_type="FLOAT_VECTOR", domain="POINT")
        b.link(b.out(gin, "Frames"), node.inputs["Geometry"])
        b.link(value, b.inp(node, "Value"))
        b.link(index, node.inputs["Index"])
        return b.out(node, "Value")

    origin = sample(position, base)
    columns = [b.vector_math("SUBTRACT", sample(position, b.math("ADD", base, float(i + 1))), origin) for i in range(3)]
    rest = b.out(b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR", inputs={"Name": REST_ATTR}), "Attribute")
    rest_head = sample(rest, base)

    def rotate(vector: Any) -> Any:
        xyz = b.node("ShaderNodeSeparateXYZ")
        b.link(vector, xyz.inputs[0])
        total = None
        for i in range(3):
            term = b.vector_math("SCALE", columns[i])
            b.link(xyz.outputs[i], term.node.inputs["Scale"])
            total = term if total is None else b.vector_math("ADD", total, term)
        return total

    def weighted(vector: Any) -> Any:
        out = b.vector_math("SCALE", vector)
        b.link(b.out(gin, "Weight"), out.node.inputs["Scale"])
        return out

    moved = b.vector_math("ADD", origin, rotate(b.vector_math("SUBTRACT", b.out(gin, "Position"), rest_head)))
    b.link(weighted(moved), gout.inputs["Position"])
    b.link(weighted(rotate(b.out(gin, "Axis X"))), gout.inputs["Axis X"])
    b.link(weighted(rotate(b.out(gin, "Axis Y"))), gout.inputs["Axis Y"])
    return tree


def skinning_group(k: int) -> tuple[bpy.types.NodeTree, bpy.types.NodeTree]:
    """Linear blend skinning of splat points with ``k`` (joint, weight) pairs per point.
    Returns the group and the per-joint group it uses."""
    joint = _joint_group()
    tree, b, gin, gout = new_geometry_group(SKIN_GROUP)
    iface: Any = tree.interface
    iface.new_socket("Joint Frames", in_out="INPUT", socket_type="NodeSocketObject")
    info = b.node("GeometryNodeObjectInfo", transform_space="RELATIVE")
    b.link(b.out(gin, "Joint Frames"), info.inputs["Object"])
    frames = b.out(info, "Geometry")
    position = b.out(b.node("GeometryNodeInputPosition"))
    rest_x = b.out(b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR", inputs={"Name": "splat_axis_x"}), "Attribute")
    rest_y = b.out(b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR", inputs={"Name": "splat_axis_y"}), "Attribute")
    sums: list[Any] = [None, None, None]
    for i in range(k):
        jid = b.node("GeometryNodeInputNamedAttribute", data_type="INT", inputs={"Name": f"skin_joint_{i}"})
        wgt = b.node("GeometryNodeInputNamedAttribute", data_type="FLOAT", inputs={"Name": f"skin_weight_{i}"})
        node = b.node("GeometryNodeGroup", node_tree=joint)
        for name, value in (("Frames", frames), ("Joint", b.out(jid, "Attribute")), ("Weight", b.out(wgt, "Attribute")),
                            ("Position", position), ("Axis X", rest_x), ("Axis Y", rest_y)):  # fmt: skip
            b.link(value, node.inputs[name])
        for s, name in enumerate(("Position", "Axis X", "Axis Y")):
            out = node.outputs[name]
            sums[s] = out if sums[s] is None else b.vector_math("ADD", sums[s], out)
    geometry = b.out(gin, "Geometry")
    for name, value in (("splat_axis_x", sums[1]), ("splat_axis_y", sums[2])):
        store = b.node("GeometryNodeStoreNamedAttribute", data_type="FLOAT_VECTOR", domain="POINT", inputs={"Name": name})
        b.link(geometry, store.inputs["Geometry"])
        b.link(value, b.inp(store, "Value"))
        geometry = b.out(store, "Geometry")
    set_pos = b.node("GeometryNodeSetPosition")
    b.link(geometry, set_pos.inputs["Geometry"])
    b.link(sums[0], set_pos.inputs["Position"])
    b.link(b.out(set_pos, "Geometry"), gout.inputs[0])
    return tree, joint


def display_group(material: bpy.types.Material, point_material: bpy.types.Material) -> bpy.types.NodeTree:
    """Points -> oriented, scaled ellipsoids (or a point cloud) with the splat materials."""
    tree, b, gin, gout = new_geometry_group(DISPLAY_GROUP)
    iface: Any = tree.interface
    points_socket = iface.new_socket("Points", in_out="INPUT", socket_type="NodeSocketBool")
    points_socket.description = "Draw a light point cloud instead of ellipsoids (large clouds)"
    size_socket = iface.new_socket("Size", in_out="INPUT", socket_type="NodeSocketFloat")
    size_socket.default_value = DEFAULT_SIZE
    size_socket.min_value = 0.1
    size_socket.description = "Ellipsoid radius in standard deviations (3 covers 99% of each Gaussian)"
    size = b.out(gin, "Size")

    def attribute(name: str, data_type: str) -> Any:
        return b.out(b.node("GeometryNodeInputNamedAttribute", data_type=data_type, inputs={"Name": name}), "Attribute")

    store = b.node("GeometryNodeStoreNamedAttribute", data_type="FLOAT", domain="POINT", inputs={"Name": "splat_extent"})
    b.link(b.out(gin, "Geometry"), store.inputs["Geometry"])
    b.link(size, b.inp(store, "Value"))
    geometry = b.out(store, "Geometry")
    scale = b.vector_math("SCALE", attribute("splat_scale", "FLOAT_VECTOR"))
    b.link(size, scale.node.inputs["Scale"])
    rotation = b.node("FunctionNodeAxesToRotation", primary_axis="X", secondary_axis="Y")
    b.link(attribute("splat_axis_x", "FLOAT_VECTOR"), rotation.inputs["Primary Axis"])
    b.link(attribute("splat_axis_y", "FLOAT_VECTOR"), rotation.inputs["Secondary Axis"])
    ico = b.node("GeometryNodeMeshIcoSphere", inputs={"Radius": 1.0, "Subdivisions": 2})
    smooth = b.node("GeometryNodeSetShadeSmooth")
    b.link(b.out(ico, "Mesh"), smooth.inputs[0])
    instances = b.node("GeometryNodeInstanceOnPoints")
    b.link(geometry, instances.inputs["Points"])
    b.link(b.out(smooth, 0), instances.inputs["Instance"])
    b.link(b.out(rotation, "Rotation"), instances.inputs["Rotation"])
    b.link(scale, instances.inputs["Scale"])
    ellipsoids = b.node("GeometryNodeSetMaterial", inputs={"Material": material})
    b.link(b.out(instances, "Instances"), ellipsoids.inputs["Geometry"])
    # Points: radius = geometric mean of the standard deviations times Size.
    sx = b.node("ShaderNodeSeparateXYZ")
    b.link(attribute("splat_scale", "FLOAT_VECTOR"), sx.inputs[0])
    product = b.math("MULTIPLY", b.math("MULTIPLY", sx.outputs[0], sx.outputs[1]), sx.outputs[2])
    radius = b.math("MULTIPLY", b.math("POWER", product, 1.0 / 3.0), size)
    to_points = b.node("GeometryNodeMeshToPoints")
    b.link(geometry, to_points.inputs["Mesh"])
    b.link(radius, to_points.inputs["Radius"])
    cloud = b.node("GeometryNodeSetMaterial", inputs={"Material": point_material})
    b.link(b.out(to_points, "Points"), cloud.inputs["Geometry"])
    switch = b.node("GeometryNodeSwitch", input_type="GEOMETRY")
    b.link(b.out(gin, "Points"), switch.inputs[0])
    b.link(b.out(ellipsoids, "Geometry"), switch.inputs[1])
    b.link(b.out(cloud, "Geometry"), switch.inputs[2])
    b.link(switch.outputs[0], gout.inputs[0])
    return tree


def splat_material(name: str, attribute_type: str) -> bpy.types.Material:
    """Emission coloured by ``splat_color`` with the Gaussian alpha fall-off (module docstring).

    attribute_type: "INSTANCER" for ellipsoid instances, "GEOMETRY" for point clouds.
    """
    mat = bpy.data.materials.new(name)
    compat.use_nodes(mat)
    compat.set_alpha_blended(mat, blended=False)
    tree: Any = mat.node_tree
    tree.nodes.clear()
    b = TreeBuilder(tree)

    def attribute(attr: str) -> Any:
        return b.node("ShaderNodeAttribute", attribute_name=attr, attribute_type=attribute_type)

    geometry = b.node("ShaderNodeNewGeometry")
    facing = b.math("MAXIMUM", b.vector_math("DOT_PRODUCT", b.out(geometry, "Normal"), b.out(geometry, "Incoming")), 0.0)
    r2 = b.math("SUBTRACT", 1.0, b.math("MULTIPLY", facing, facing))
    extent = b.out(attribute("splat_extent"), "Fac")
    k2 = b.math("MULTIPLY", b.math("MULTIPLY", extent, extent), -0.5)
    falloff = b.math("EXPONENT", b.math("MULTIPLY", k2, r2))
    front = b.math("SUBTRACT", 1.0, b.out(geometry, "Backfacing"))
    alpha = b.math("MULTIPLY", b.math("MULTIPLY", b.out(attribute("splat_alpha"), "Fac"), falloff), front)
    emission = b.node("ShaderNodeEmission", inputs={"Strength": 1.0})
    b.link(b.out(attribute("splat_color"), "Color"), emission.inputs["Color"])
    transparent = b.node("ShaderNodeBsdfTransparent")
    mix = b.node("ShaderNodeMixShader")
    b.link(alpha, mix.inputs[0])
    b.link(b.out(transparent, 0), mix.inputs[1])
    b.link(b.out(emission, 0), mix.inputs[2])
    output = b.node("ShaderNodeOutputMaterial")
    b.link(b.out(mix, 0), output.inputs["Surface"])
    return mat


class SplatSetup:
    """The node groups and materials shared by every splat object of one import."""

    def __init__(self, created: Created, skin_k: int = 0):
        self.created = created
        self.material = created.add(splat_material(MATERIAL, "INSTANCER"))
        self.point_material = created.add(splat_material(POINT_MATERIAL, "GEOMETRY"))
        self.display = created.add(display_group(self.material, self.point_material))
        self._skin: dict[int, bpy.types.NodeTree] = {}
        if skin_k:
            self.skinning(skin_k)

    def skinning(self, k: int) -> bpy.types.NodeTree:
        if k not in self._skin:
            group, joint = skinning_group(k)
            self.created.add(joint)
            self._skin[k] = self.created.add(group)
        return self._skin[k]


# --------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------


def create_joint_frames(
    name: str, heads: np.ndarray, names: list[str], armature: bpy.types.Object, collection: bpy.types.Collection
) -> bpy.types.Object:
    """The companion mesh giving the skinning nodes each joint's posed transform (docstring)."""
    heads = np.asarray(heads, np.float64)
    verts = np.repeat(heads, 4, axis=0)
    verts[1::4] += [1.0, 0.0, 0.0]
    verts[2::4] += [0.0, 1.0, 0.0]
    verts[3::4] += [0.0, 0.0, 1.0]
    mesh = new_mesh(name, verts)
    set_point_attribute(mesh, REST_ATTR, np.repeat(heads, 4, axis=0), "FLOAT_VECTOR")
    obj = bpy.data.objects.new(name, mesh)
    for j, bone in enumerate(names):
        obj.vertex_groups.new(name=bone).add([4 * j, 4 * j + 1, 4 * j + 2, 4 * j + 3], 1.0, "REPLACE")
    mod: Any = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = armature
    obj.parent = armature
    obj.hide_render = True
    obj.hide_select = True
    collection.objects.link(obj)
    return obj


def create_splat_object(
    name: str,
    points: SplatPoints,
    collection: bpy.types.Collection,
    setup: SplatSetup,
    frames: bpy.types.Object | None = None,
    display_points: bool = False,
) -> bpy.types.Object:
    """A splat point mesh with its attributes and modifiers (skinned when ``frames`` is given)."""
    mesh = new_mesh(name, points.positions)
    set_point_attribute(mesh, "splat_axis_x", points.axis_x, "FLOAT_VECTOR")
    set_point_attribute(mesh, "splat_axis_y", points.axis_y, "FLOAT_VECTOR")
    set_point_attribute(mesh, "splat_scale", points.scales, "FLOAT_VECTOR")
    set_point_attribute(mesh, "splat_color", points.colors, "FLOAT_COLOR")
    set_point_attribute(mesh, "splat_alpha", points.alphas, "FLOAT")
    mesh.materials.append(setup.material)
    mesh.materials.append(setup.point_material)
    obj = bpy.data.objects.new(name, mesh)
    if frames is not None:
        k = points.skin_joints.shape[1]
        for i in range(k):
            set_point_attribute(mesh, f"skin_joint_{i}", points.skin_joints[:, i], "INT")
            set_point_attribute(mesh, f"skin_weight_{i}", points.skin_weights[:, i], "FLOAT")
        skin: Any = obj.modifiers.new("Troupe Skinning", "NODES")
        skin.node_group = setup.skinning(k)
        skin[_input_id(skin.node_group, "Joint Frames")] = frames
        obj.parent = frames.parent
    display: Any = obj.modifiers.new("Troupe Splats", "NODES")
    display.node_group = setup.display
    display[_input_id(setup.display, "Points")] = bool(display_points)
    collection.objects.link(obj)
    return obj


def _input_id(tree: bpy.types.NodeTree, name: str) -> str:
    iface: Any = tree.interface
    for item in iface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(name)


# --------------------------------------------------------------------------------------
# Standalone 3DGS PLY files
# --------------------------------------------------------------------------------------

UP_AXES = {"Y_DOWN": axes.Y_DOWN, "Y_UP": axes.Y_UP, "Z_UP": axes.IDENTITY}


def import_3dgs_ply(
    path: str | Path,
    up_axis: str = "Y_DOWN",
    collection: bpy.types.Collection | None = None,
    display_points: bool | None = None,
    points_threshold: int = 500_000,
) -> bpy.types.Object:
    """Import a standard 3DGS PLY (any trainer's; skin weights ignored) as a static splat object.

    up_axis: the file's up direction, "Y_DOWN" (COLMAP / OpenCV worlds, most trainers),
    "Y_UP" or "Z_UP". Clouds above ``points_threshold`` Gaussians start in point display.
    Raises ``bundle.BundleError`` naming the file on a malformed PLY; creates nothing then.
    """
    path = Path(path)
    splats = bundle.splats_from_ply(path, require_skin=False)
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {sorted(UP_AXES)}, not {up_axis!r}")
    points = splat_points(splats, UP_AXES[up_axis])
    with all_or_nothing() as created:
        context: Any = bpy.context
        target = collection or context.scene.collection
        if display_points is None:
            display_points = points.count > points_threshold
        obj = create_splat_object(path.stem, points, target, SplatSetup(created), display_points=display_points)
        obj["troupe_source"] = str(path)
    return obj
