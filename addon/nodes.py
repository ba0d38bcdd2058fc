# SPDX-License-Identifier: GPL-3.0-or-later
"""A small helper for building node trees from Python (geometry and shader nodes)."""

from __future__ import annotations

from typing import Any

import bpy


def socket(sockets: Any, key: str | int) -> Any:
    """A node socket by index, or by name among the enabled sockets (node types such as Compare
    keep one disabled socket per data type under the same name)."""
    if isinstance(key, int):
        return sockets[key]
    for s in sockets:
        if s.name == key and getattr(s, "enabled", True):
            return s
    for s in sockets:
        if s.identifier == key:
            return s
    raise KeyError(f"no socket {key!r} among {[s.name for s in sockets]}")


class TreeBuilder:
    """Adds nodes and links to ``tree``; ``node(...)`` sets properties and input values."""

    def __init__(self, tree: bpy.types.NodeTree):
        self.tree = tree
        self._x = 0.0

    def node(self, type_name: str, inputs: dict[str | int, Any] | None = None, **props: Any) -> Any:
        node = self.tree.nodes.new(type_name)
        for prop, setting in props.items():
            setattr(node, prop, setting)
        node.location = (self._x, 0.0)
        self._x += 200.0
        for key, value in (inputs or {}).items():
            target = socket(node.inputs, key)
            if isinstance(value, bpy.types.NodeSocket):
                self.tree.links.new(value, target)
            else:
                target.default_value = value
        return node

    def link(self, from_socket: Any, to_socket: Any) -> None:
        self.tree.links.new(from_socket, to_socket)

    @staticmethod
    def out(node: Any, key: str | int = 0) -> Any:
        return socket(node.outputs, key)

    @staticmethod
    def inp(node: Any, key: str | int = 0) -> Any:
        return socket(node.inputs, key)

    def _operation(self, type_name: str, operation: str, operands: tuple[Any, ...]) -> Any:
        node = self.node(type_name, operation=operation)
        for i, v in enumerate(operands):
            if isinstance(v, bpy.types.NodeSocket):
                self.link(v, node.inputs[i])
            elif v is not None:
                node.inputs[i].default_value = v
        return node

    def math(self, operation: str, a: Any, b: Any = None) -> Any:
        """A float Math node on sockets or constants; returns its output socket."""
        return self._operation("ShaderNodeMath", operation, (a, b)).outputs[0]

    def vector_math(self, operation: str, a: Any, b: Any = None) -> Any:
        """A Vector Math node on sockets or constants; returns its (vector or value) output."""
        node = self._operation("ShaderNodeVectorMath", operation, (a, b))
        return node.outputs["Value" if operation in ("DOT_PRODUCT", "LENGTH", "DISTANCE") else "Vector"]


def new_geometry_group(name: str) -> tuple[bpy.types.NodeTree, TreeBuilder, Any, Any]:
    """A geometry node group with a Geometry input and output; returns (tree, builder, in, out)."""
    groups: Any = bpy.data.node_groups
    tree = groups.new(name, "GeometryNodeTree")
    iface: Any = tree.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    b = TreeBuilder(tree)
    group_in = b.node("NodeGroupInput")
    group_out = b.node("NodeGroupOutput")
    return tree, b, group_in, group_out
