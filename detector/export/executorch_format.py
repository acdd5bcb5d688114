"""ExecuTorch export (``.pte``, XNNPACK delegate) and the ExecuTorch Python-runtime runner.

How a program is built (see :func:`export_executorch`):

1. the :class:`~detector.export.wrapper.ExportWrapper` (BatchNorm folded; raw outputs, or boxes
   and scores for ``decoded``) is captured with ``torch.export.export`` at a fixed batch of 1;
2. ``executorch.exir.to_edge_transform_and_lower`` lowers it to the Edge dialect and hands every
   subgraph the XNNPACK partitioner accepts to the XNNPACK delegate;
3. ``.to_executorch()`` gives the program, whose buffer is written as the ``.pte`` file.

The ``forward`` method returns the stage's outputs in the order of
:func:`~detector.export.wrapper.output_names`. A ``decoded`` program also returns the raw
``box_deltas`` and ``class_logits`` after ``boxes`` and ``scores`` (the same tensors the boxes are
decoded from), so verification reads the raw outputs from the very artifact it checks. The
order is recorded in the sidecar (``export.outputs``).

Not supported here: in-graph NMS (data-dependent output size), int8 and a free batch dimension;
:data:`detector.export.FORMATS` rejects those requests before any work.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .errors import ExportError
from .registry import ExportFormat, ExportJob, register
from .wrapper import program_module
from .wrapper import program_output_names as _program_output_names

if TYPE_CHECKING:
    from .config import ExportConfig

__all__ = ["ExecuTorchRunner", "export_executorch", "program_output_names"]


def program_output_names(stage: str) -> list[str]:
    """Names of the ``forward`` outputs of a program of ``stage``, in order."""
    return _program_output_names(stage, "executorch")


def export_executorch(
    model: nn.Module,
    path: str | Path,
    *,
    stage: str = "raw",
    post: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export an SSD to an ExecuTorch ``.pte`` file lowered to XNNPACK.

    Args:
        model: the :class:`~detector.models.SSD` (eval mode; not modified).
        path: the ``.pte`` file to write.
        stage: ``"raw"`` or ``"decoded"``.
        post: post-processing settings for ``decoded`` (``score_thresh`` ... ``clip_boxes``;
            only ``clip_boxes`` affects the decoded graph).

    Returns:
        Facts for the sidecar: ``exporter``, ``backend``, ``outputs``, ``int8``,
        ``executorch_version``.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    names = program_output_names(stage)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = program_module(model, stage, post)
    h, w = model.image_size
    example = (torch.rand(1, 3, h, w),)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            exported = torch.export.export(module, example)
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            program = edge.to_executorch()
    except Exception as exc:  # torch.export / exir raise many kinds of errors
        raise ExportError(f"ExecuTorch export failed: {type(exc).__name__}: {exc}") from exc
    path.write_bytes(program.buffer)
    return {
        "exporter": "torch.export + executorch.exir.to_edge_transform_and_lower",
        "backend": "XNNPACK",
        "method": "forward",
        "outputs": names,
        "int8": False,
        "executorch_version": _version(),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "unknown"


class ExecuTorchRunner:
    """The ``forward`` method of a ``.pte`` file in ExecuTorch's Python runtime.

    Args:
        path: the ``.pte`` file.
        stage: the program's stage (``"raw"`` or ``"decoded"``), which names its outputs.

    Calling it with ``float32 [N, 3, H, W]`` returns the outputs by name; the program has a fixed
    batch of 1, so images are run one at a time.
    """

    def __init__(self, path: str | Path, *, stage: str = "raw") -> None:
        from executorch.runtime import Runtime

        self.output_names = program_output_names(stage)
        runtime = Runtime.get()
        self.program = runtime.load_program(Path(path))
        self.method = self.program.load_method("forward")

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        chunks: list[list[np.ndarray]] = []
        for i in range(images.shape[0]):
            out = self.method.execute([torch.from_numpy(images[i : i + 1].copy())])
            if len(out) != len(self.output_names):
                raise ExportError(
                    f"the program returned {len(out)} outputs, expected {self.output_names}"
                )
            chunks.append([o.detach().numpy().copy() for o in out])
        return {n: np.concatenate([c[j] for c in chunks]) for j, n in enumerate(self.output_names)}


# ------------------------------------------------------------------------------ registry entry
def _export(job: ExportJob) -> dict[str, Any]:
    return export_executorch(job.model, job.path, **job.graph_options())


def _runner(path: Path, config: ExportConfig) -> ExecuTorchRunner:
    return ExecuTorchRunner(path, stage=config.stage)


register(
    ExportFormat(
        name="executorch",
        suffix=".pte",
        runtime="ExecuTorch (XNNPACK)",
        stages=("raw", "decoded"),
        requires=("executorch",),
        install="pip install executorch",
        notes="torch.export + XNNPACK partitioner; verified in the ExecuTorch Python runtime",
        export=_export,
        runner=_runner,
    )
)
