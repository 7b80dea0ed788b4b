"""ONNX graph rewrites that keep a model's arithmetic and change how onnxruntime schedules it.

:func:`convs_as_matmuls`: onnxruntime's CPU ``Conv`` runs one small matrix product per batch item.
On a short 1-D signal (Silero's encoder sees 1 to 5 frames per row) those products are a few
columns wide and slow; cutting the frames out (im2col) and multiplying all rows of the batch in
one ``MatMul`` does the same sums in one large product, several times faster for hundreds of rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto


def convs_as_matmuls(model: ModelProto, before: NodeProto) -> None:
    """Replace each 1-D ``Conv`` that comes before ``before`` (with a constant weight, one group,
    no dilation and a known input length) by im2col and one ``MatMul``; in place."""
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    known = shape_inference.infer_shapes(model).graph
    lengths = {
        value.name: value.type.tensor_type.shape.dim[2].dim_value
        for value in [*known.value_info, *known.input]
        if len(value.type.tensor_type.shape.dim) == 3
    }
    weights = {init.name: init for init in graph.initializer}
    nodes: list[NodeProto] = []
    stop = list(graph.node).index(before)
    for index, node in enumerate(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            index >= stop
            or node.op_type != "Conv"
            or node.input[1] not in weights
            or attrs.get("group", 1) != 1
            or list(attrs.get("dilations", [1])) != [1]
            or not lengths.get(node.input[0])
        ):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])  # [out, in, kernel]
        out_ch, in_ch, kernel = weight.shape
        (stride,) = attrs.get("strides", [1])
        pad_l, pad_r = list(attrs.get("pads", [0, 0]))
        frames = (lengths[node.input[0]] + pad_l + pad_r - kernel) // stride + 1
        name = f"mm_{index}_"

        def const(suffix: str, value: np.ndarray, name: str = name) -> str:
            graph.initializer.append(numpy_helper.from_array(value, name + suffix))
            return name + suffix

        # Row k*in + c of the matrix is weight[:, c, k]: a frame cut as [kernel, in] flattened.
        matrix = const("w", weight.transpose(2, 1, 0).reshape(kernel * in_ch, out_ch))
        nodes.append(helper.make_node("Transpose", [node.input[0]], [name + "t"], perm=[0, 2, 1]))
        signal = name + "t"  # [N, L, in]
        if pad_l or pad_r:
            pads = const("pads", np.array([0, pad_l, 0, 0, pad_r, 0], dtype=np.int64))
            nodes.append(helper.make_node("Pad", [signal, pads], [name + "p"]))
            signal = name + "p"
        row_shape = const("row", np.array([0, 1, kernel * in_ch], dtype=np.int64))
        axis = const("axis", np.array([1], dtype=np.int64))
        cut = []
        for frame in range(frames):
            start = const(f"s{frame}", np.array([frame * stride], dtype=np.int64))
            end = const(f"e{frame}", np.array([frame * stride + kernel], dtype=np.int64))
            piece = f"{name}f{frame}"
            nodes.append(helper.make_node("Slice", [signal, start, end, axis], [piece]))
            nodes.append(helper.make_node("Reshape", [piece, row_shape], [piece + "r"]))
            cut.append(piece + "r")
        columns = name + "cols"  # [N, frames, kernel * in]
        nodes.append(helper.make_node("Concat", cut, [columns], axis=1))
        product = name + "mm"
        nodes.append(helper.make_node("MatMul", [columns, matrix], [product]))
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [name + "b"]))
            product = name + "b"
        nodes.append(helper.make_node("Transpose", [product], [node.output[0]], perm=[0, 2, 1]))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:  # the replaced convolutions' weights (onnxruntime warns of each)
        graph.initializer.remove(init)
