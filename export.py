"""Export a trained detector: ``python export.py checkpoint=<path> [format=onnx] [key=value ...]``.

Examples::

    python export.py checkpoint=outputs/train/<run>/best.pt                    # ONNX, raw outputs
    python export.py checkpoint=best.pt nms=true dynamic_batch=true            # NMS in the graph
    python export.py checkpoint=best.pt int8=true calibration=data/val/images  # int8 (QDQ)
    python export.py checkpoint=best.pt image_size=[320,320] postprocess.score_thresh=0.3

Writes ``<name>.onnx`` and ``<name>.json`` (the sidecar) into the Hydra run directory, runs the
artifact in its runtime against PyTorch and prints the verdict; exits with status 1 and a message
when the request is not supported or an fp32 artifact does not match.
"""

from detector.cli import export_main

if __name__ == "__main__":
    export_main()
