"""Datasets, synthetic data, augmentation and batching.

Every dataset yields the same :class:`Sample` (RGB ``uint8`` image, pixel xyxy ``float32`` boxes,
``int64`` labels in ``1..C``, image id, class names) and knows nothing about anchors. Readers:
:class:`CocoDetection`, :class:`VOCDetection`, :class:`FolderDetection` (images + VOC XML),
:class:`WiderFace`; :func:`generate_synthetic` writes the default training data. Build them by
name with :func:`build_dataset` (or from a config with :func:`dataset_from_config`; the kinds
are registered in :data:`DATASETS`), augment with :func:`build_transforms`, wrap with
:class:`SeededTransformDataset` and batch with :func:`collate_detection`.
"""

from __future__ import annotations

from detector.data.base import (
    DatasetError,
    DataWarning,
    DetectionDataset,
    ImageEntry,
    IssueLog,
    Sample,
    load_image,
)
from detector.data.coco import CocoDatasetConfig, CocoDetection, load_coco_json, write_coco_json
from detector.data.folder import (
    FolderDatasetConfig,
    FolderDetection,
    ratio_split,
    read_labels_file,
    read_split_list,
)
from detector.data.loader import SeededTransformDataset, collate_detection
from detector.data.registry import (
    DATASETS,
    DatasetConfig,
    DatasetKind,
    build_dataset,
    dataset_from_config,
    dataset_kind,
    register_dataset,
)
from detector.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticConfig,
    SyntheticDatasetConfig,
    generate_synthetic,
)
from detector.data.transforms import (
    PRESETS,
    DetectionTransform,
    MinIoURandomCrop,
    ZoomOut,
    bbox_params,
    build_transforms,
    eval_transform,
    photometric_distort,
    ssd_train,
    ssdlite_train,
)
from detector.data.voc import (
    VOC_CLASSES,
    VocDatasetConfig,
    VOCDetection,
    parse_voc_xml,
    write_voc_xml,
)
from detector.data.widerface import WiderFace, WiderFaceDatasetConfig, parse_wider_gt

__all__ = [
    "DATASETS",
    "PRESETS",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "CocoDatasetConfig",
    "CocoDetection",
    "DataWarning",
    "DatasetConfig",
    "DatasetError",
    "DatasetKind",
    "DetectionDataset",
    "DetectionTransform",
    "FolderDatasetConfig",
    "FolderDetection",
    "ImageEntry",
    "IssueLog",
    "MinIoURandomCrop",
    "Sample",
    "SeededTransformDataset",
    "SyntheticConfig",
    "SyntheticDatasetConfig",
    "VOCDetection",
    "VocDatasetConfig",
    "WiderFace",
    "WiderFaceDatasetConfig",
    "ZoomOut",
    "bbox_params",
    "build_dataset",
    "build_transforms",
    "collate_detection",
    "dataset_from_config",
    "dataset_kind",
    "eval_transform",
    "generate_synthetic",
    "load_coco_json",
    "load_image",
    "parse_voc_xml",
    "parse_wider_gt",
    "photometric_distort",
    "ratio_split",
    "read_labels_file",
    "read_split_list",
    "register_dataset",
    "ssd_train",
    "ssdlite_train",
    "write_coco_json",
    "write_voc_xml",
]
