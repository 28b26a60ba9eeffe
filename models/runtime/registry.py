"""The explicit table of runtime wrappers a manifest may name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from models.errors import ModelError
from models.manifest import FileEntry
from models.types import Task

T = TypeVar("T")


@dataclass(frozen=True)
class WrapperSpec:
    """Which task a wrapper serves and where its factory lives (imported on first use)."""

    task: Task
    factory: str
    """`module:function` taking (path, params, threads)."""


WRAPPERS: Mapping[str, WrapperSpec] = {
    "blazeface": WrapperSpec(Task.DETECTOR, "models.runtime.blazeface:build"),
    "dlib_shape_predictor": WrapperSpec(Task.LANDMARKS, "models.runtime.shape_predictor:build"),
    "dlib_resnet": WrapperSpec(Task.RECOGNIZER, "models.runtime.dlib_recognizer:build"),
    "facemesh": WrapperSpec(Task.DENSE_LANDMARKS, "models.runtime.facemesh:build"),
    "linear_adapter": WrapperSpec(Task.ADAPTER, "models.runtime.adapter:build"),
    "as_norm_cohort": WrapperSpec(Task.COHORT, "models.runtime.cohort:build"),
    "insightface_scrfd": WrapperSpec(
        Task.DETECTOR, "models.runtime.insightface_models:build_scrfd"
    ),
    "insightface_arcface": WrapperSpec(
        Task.RECOGNIZER, "models.runtime.insightface_models:build_arcface"
    ),
    "yunet": WrapperSpec(Task.DETECTOR, "models.runtime.opencv_detectors:build_yunet"),
    "ultralight": WrapperSpec(Task.DETECTOR, "models.runtime.opencv_detectors:build_ultralight"),
    "pad_onnx": WrapperSpec(Task.LIVENESS, "models.liveness.onnx_pad:build"),
    "centernet_cylinder": WrapperSpec(
        Task.CYLINDER_DETECTOR, "models.runtime.cylinder_detector:build"
    ),
}


def build_component(pack_dir: Path, entry: FileEntry, threads: int, expect: type[T]) -> T:
    """Construct the wrapper the manifest names for one file; it must be an `expect`.

    `expect` is the interface the caller uses (a runtime-checkable Protocol or a class), so a
    factory that builds the wrong kind of object is a ModelError here, not an AttributeError
    deep in the pipeline.
    """
    spec = WRAPPERS.get(entry.wrapper)
    if spec is None:
        raise ModelError(
            f"{entry.path}: unknown wrapper {entry.wrapper!r} (known: {', '.join(sorted(WRAPPERS))})"
        )
    if spec.task != entry.task:
        raise ModelError(
            f"{entry.path}: wrapper {entry.wrapper!r} runs {spec.task.value} models, "
            f"the manifest says {entry.task.value}"
        )
    module_name, function_name = spec.factory.split(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    params: Mapping[str, Any] = entry.params
    component = factory(pack_dir / entry.path, params, threads)
    if not isinstance(component, expect):
        raise ModelError(
            f"{entry.path}: wrapper {entry.wrapper!r} built a {type(component).__name__}, "
            f"not a {expect.__name__}"
        )
    return component
