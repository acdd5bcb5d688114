"""The ``detector`` command: ``detector train|eval|export|detect|convert|summary [overrides ...]``.

Every subcommand is a Hydra main over the configs shipped in the package (``detector/conf``), so an
installed wheel trains, evaluates, exports and detects exactly as the source tree does; the root
scripts ``train.py``, ``eval.py``, ``export.py`` and ``detect.py`` are shims over the same mains.

Known problems end with one line (``<command>: error: <message>``, exit 1), not a traceback; set
``DETECTOR_TRACEBACK=1`` to see the traceback. Importing this module does not import torch
(``detector detect model=<.onnx>`` runs without it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra

from .errors import friendly_errors, log_to_files

__all__ = [
    "COMMANDS",
    "CONF_DIR",
    "detect_main",
    "eval_main",
    "export_main",
    "friendly_errors",
    "main",
    "reject_unknown_keys",
    "train_main",
]

#: The configs shipped with the package (Hydra's search path for every command).
CONF_DIR = Path(__file__).resolve().parent / "conf"


def reject_unknown_keys(cfg: Any, path: str = "") -> None:
    """Raise ``ValueError`` for a key that no schema declares.

    Hydra's ``+key=value`` adds keys even to typed (structured) configs, and
    ``OmegaConf.to_object`` then drops them silently (``+backbone.alhpa=0.5`` trained with the
    default alpha). Every node built on a dataclass schema may hold only that dataclass's fields.
    """
    import dataclasses
    import difflib

    from omegaconf import DictConfig, OmegaConf

    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        known = [f.name for f in dataclasses.fields(schema)]
        for key in cfg:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {path}{close[0]}?" if close else ""
                where = f"{path.rstrip('.')} takes" if path else "top-level options are"
                raise ValueError(f"unknown option {path}{key}{hint} ({where}: {', '.join(known)})")
    for key in cfg:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            reject_unknown_keys(node, f"{path}{key}.")


class _TeeToLogFiles:
    """``sys.stdout`` that also writes each line to the root logger's log files (Hydra's
    ``<command>.log`` in the run folder), so the file holds what the command printed."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.pending = ""

    def write(self, text: str) -> int:
        import logging

        self.stream.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            log_to_files(line, logging.INFO)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


# ------------------------------------------------------------------------------------ commands
def _register_train_schemas() -> None:
    from .config import register_schemas

    register_schemas()


def _run_train(cfg: Any) -> float:
    from .config import from_hydra
    from .engine.train import fit

    metrics = fit(from_hydra(cfg), _output_dir())
    return metrics.get("val/mAP", float("nan"))  # the objective for Hydra sweepers


def _run_eval(cfg: Any) -> None:
    import json

    from .config import from_hydra
    from .engine.evaluate import evaluate_checkpoint, evaluate_detections_file
    from .evaluation import format_per_class_table

    spec = from_hydra(cfg)
    out_dir = _output_dir()
    if (spec.checkpoint is None) == (spec.detections is None):
        raise ValueError("give exactly one of checkpoint=<path> or detections=<results.json>")
    if spec.checkpoint is not None:
        metrics = evaluate_checkpoint(spec, out_dir)
    else:
        metrics = evaluate_detections_file(spec, out_dir)
    print(format_per_class_table(metrics, markdown=False))
    headline = {k: metrics[k] for k in ("protocol", "AP", "AP50", "AP75", "mAP") if k in metrics}
    print(json.dumps(headline, indent=2))
    print(f"results in {out_dir}")


def _register_export_schemas() -> None:
    from .export.schema import register_export_schemas

    register_export_schemas()


def _run_export(cfg: Any) -> None:
    from .export import ExportError, export_checkpoint, format_table
    from .export.schema import options_from_hydra

    if cfg.format.name == "web":  # the web app: an nms=true ONNX export plus the page
        from .web.export import export_from_hydra

        export_from_hydra(cfg, _output_dir())
        return
    try:
        checkpoint, options, use_ema = options_from_hydra(cfg)
        result = export_checkpoint(checkpoint, _output_dir(), options, use_ema=use_ema)
    except ExportError as exc:
        if "checkpoint=" in str(exc) and "required" in str(exc):
            raise ExportError(f"{exc}\n\nformats:\n{format_table()}") from exc
        raise
    print(f"export OK: {result.model_path}")


def _register_detect_schema() -> None:
    from .predict import register_detect_schema

    register_detect_schema()


def _run_detect(cfg: Any) -> None:
    from omegaconf import OmegaConf

    from .predict import run_detect

    result = run_detect(OmegaConf.to_object(cfg), _output_dir())
    print(
        f"{len(result['detections'])} detections in {result['num_images']} image(s); "
        f"results in {result['detections_path'].parent}"
    )


def _hydra_command(
    name: str, config_name: str, register: Callable[[], None], run: Callable[[Any], Any]
) -> Callable[[], Any]:
    """A Hydra main over ``detector/conf/<config_name>.yaml`` that reports known errors in one
    line as ``<name>: error: ...``."""

    @hydra.main(version_base="1.3", config_path="conf", config_name=config_name)
    @friendly_errors(name)
    def command(cfg: Any) -> Any:
        reject_unknown_keys(cfg)
        if name == "detector train":  # training writes its own lines to the log files
            return run(cfg)
        stdout, sys.stdout = sys.stdout, _TeeToLogFiles(sys.stdout)
        try:
            return run(cfg)
        finally:
            sys.stdout = stdout

    def main() -> Any:
        register()
        return command()

    main.__name__ = main.__qualname__ = f"{name.replace(' ', '_')}_main"
    main.__doc__ = f"``{name} [overrides ...]`` (Hydra main over conf/{config_name}.yaml)."
    return main


train_main = _hydra_command("detector train", "train", _register_train_schemas, _run_train)
eval_main = _hydra_command("detector eval", "eval", _register_train_schemas, _run_eval)
export_main = _hydra_command("detector export", "export", _register_export_schemas, _run_export)
detect_main = _hydra_command("detector detect", "detect", _register_detect_schema, _run_detect)


def _summary_main() -> Any:
    from .summary import main as summary

    return summary(sys.argv[1:])


def _convert_main() -> Any:
    from .convert.__main__ import main as convert

    return convert(sys.argv[1:])


#: subcommand -> (entry, one-line description)
COMMANDS: dict[str, tuple[Callable[[], Any], str]] = {
    "train": (train_main, "train a detector (python train.py)"),
    "eval": (eval_main, "COCO / VOC / WIDER FACE metrics of a checkpoint or a results file"),
    "export": (export_main, "export to ONNX, TFLite, ExecuTorch or Core ML and verify"),
    "detect": (detect_main, "detect on images, folders, videos or a camera"),
    "convert": (_convert_main, "import weights (TF OD API TFLite) into a checkpoint"),
    "summary": (_summary_main, "parameters, mult-adds, feature maps and anchors of a model"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: detector <command> [key=value ... | group=option ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += [
        "",
        "`detector <command> --help` lists the command's config groups and options.",
        "Examples: detector train backbone.alpha=0.5 | detector detect checkpoint=best.pt source=0",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Any:
    """The ``detector`` console command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"detector: error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    entry = COMMANDS[name][0]
    sys.argv = [f"detector-{name}", *rest]  # Hydra reads sys.argv
    result = entry()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
