"""The BentoML peer of the classification service, for ``benchmarks/service_load.py`` (not project code).

It serves the same ``model.onnx`` with the same preprocessing as ``service/`` (decode, RGB, resize of the
whole image to the bundle's 50x50 with Pillow BILINEAR, float32 CHW 0..255) and the same onnxruntime threading
(``intra_op_threads`` per call, one inter-op thread, sequential execution, no spinning), and answers the top-5
classes with softmax probabilities. Two routes, one multipart field ``file`` each:

* ``POST /classify``: a batchable API; BentoML's adaptive batcher gathers concurrent requests into one call of
  up to ``max_batch_size`` images (its ``max_latency_ms`` is a latency budget: requests predicted to exceed it
  are refused with 503).
* ``POST /classify_single``: the same work without batching (one image per onnxruntime call).

It runs in a throw-away virtualenv that the benchmark creates (BentoML is never a dependency of the project):

    .bench/peer-venv/bin/bentoml serve service:PeerClassifier --working-dir benchmarks/peer_bentoml \
        --port 3000 --arg model_path=models/stn-linearized/model.onnx --arg intra_op_threads=1

BentoML reads the decorator arguments when this module is imported, so the bento arguments are read at import
time here (``bentoml.use_arguments``); the onnxruntime session is built in the service's ``__init__``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel, Field

TOP_K = 5


class PeerArgs(BaseModel):
    """Bento arguments (``bentoml serve ... --arg key=value``)."""

    model_path: str = Field(description="path of the bundle's model.onnx (model.json beside it)")
    intra_op_threads: int = Field(default=1, ge=1, description="onnxruntime intra-op threads per call")
    max_batch_size: int = Field(default=16, ge=1, description="most images in one batched call")
    max_latency_ms: int = Field(default=30000, ge=1, description="BentoML's latency budget per request, ms")
    workers: int = Field(default=1, ge=1, description="BentoML worker processes")


ARGS = bentoml.use_arguments(PeerArgs)


def preprocess(image: Image.Image, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """(3, H, W) float32 0..255: the whole RGB image resized to ``size`` (W, H) with Pillow BILINEAR."""
    resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)


def top_k(logits: npt.NDArray[np.float32], k: int) -> list[list[dict[str, Any]]]:
    """Per row of (N, C) logits: the ``k`` most probable classes (softmax in float64), most probable first."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    probabilities = np.exp(z)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [{"class_id": int(i), "probability": float(row[i])} for i in top]
        for row, top in zip(probabilities, order, strict=True)
    ]


@bentoml.service(workers=ARGS.workers, traffic={"timeout": max(1, ARGS.max_latency_ms // 1000)})
class PeerClassifier:
    """The model bundle behind BentoML's HTTP server and adaptive batcher."""

    def __init__(self) -> None:
        import onnxruntime as ort

        path = Path(ARGS.model_path)
        card = json.loads((path.parent / "model.json").read_text())
        resize = card["input"]["resize"]
        if resize["method"] != "bilinear":
            raise ValueError(f"the peer implements only bilinear resizing, not {resize['method']}")
        self.size = (int(resize["width"]), int(resize["height"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = ARGS.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.logits_name = "logits"

    def _infer(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        batch = np.stack([preprocess(image, self.size) for image in images])
        (logits,) = self.session.run([self.logits_name], {self.input_name: batch})
        return [{"predictions": predictions} for predictions in top_k(np.asarray(logits), TOP_K)]

    @bentoml.api(batchable=True, max_batch_size=ARGS.max_batch_size, max_latency_ms=ARGS.max_latency_ms)
    def classify(self, file: list[Image.Image]) -> list[dict[str, Any]]:
        """Top-5 classes per image; concurrent requests are batched (one image per request here)."""
        return self._infer(file)

    @bentoml.api
    def classify_single(self, file: Image.Image) -> list[dict[str, Any]]:
        """Top-5 classes of one image, one onnxruntime call per request (batching off)."""
        return self._infer([file])
