"""Graph surgery: one ONNX graph from the network graph and the post-processing graph.

The network (``images -> box_deltas, class_logits``) and the post-processing
(:class:`~detector.export.wrapper.Postprocess`, ``box_deltas, class_logits -> detections``) are
exported separately, so that only the network is quantized; :func:`join_graphs` then connects
them. The joined graph keeps the tensors ``box_deltas`` and ``class_logits`` under those names, so
verification can read the raw outputs of the very artifact it checks.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import ExportError
from .wrapper import RAW_NAMES

__all__ = ["join_graphs"]


def join_graphs(net, post):
    """One graph from ``net`` (``images -> box_deltas, class_logits``) and ``post`` (those two
    tensors in, detections out).

    The names inside ``post`` are prefixed so nothing collides; its inputs keep their names and so
    connect to ``net``'s outputs, which remain in the graph as internal tensors.
    """
    import onnx
    from onnx import helper

    if [i.name for i in post.graph.input] != list(RAW_NAMES):
        raise ExportError(f"post-processing graph inputs must be {RAW_NAMES}")
    keep = set(RAW_NAMES) | {o.name for o in post.graph.output}

    def rename(name: str) -> str:
        return name if (not name or name in keep) else f"post/{name}"

    nodes = []
    for node in post.graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = f"post/{node.name}" if node.name else ""
        new.input[:] = [rename(n) for n in node.input]
        new.output[:] = [rename(n) for n in node.output]
        _rename_subgraphs(new, rename)
        nodes.append(new)
    initializers = _renamed_copies(post.graph.initializer, rename)
    value_info = _renamed_copies(post.graph.value_info, rename)
    graph = helper.make_graph(
        [*net.graph.node, *nodes],
        net.graph.name or "detector",
        inputs=list(net.graph.input),
        outputs=list(post.graph.output),
        initializer=[*net.graph.initializer, *initializers],
        value_info=[*net.graph.value_info, *net.graph.output, *value_info],
    )
    opsets: dict[str, int] = {}
    for imp in [*net.opset_import, *post.opset_import]:
        opsets[imp.domain] = max(opsets.get(imp.domain, 0), imp.version)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        producer_name=net.producer_name or "detector",
        producer_version=net.producer_version,
    )
    model.ir_version = max(net.ir_version, post.ir_version)
    model.functions.extend([*net.functions, *post.functions])
    onnx.checker.check_model(model)
    return model


def _renamed_copies(protos, rename: Callable[[str], str]) -> list:
    """Copies of named protos (initializers, value infos) under ``rename(name)``."""
    copies = []
    for proto in protos:
        new = type(proto)()
        new.CopyFrom(proto)
        new.name = rename(proto.name)
        copies.append(new)
    return copies


def _rename_subgraphs(node, rename: Callable[[str], str]) -> None:
    # Our post-processing graph has no control flow; refuse rather than mis-rename if it ever does.
    for attr in node.attribute:
        if attr.g.node or len(attr.graphs):
            raise ExportError(f"cannot join graphs: node {node.name} has a subgraph")
