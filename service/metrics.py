"""Prometheus metrics of the service, on an injected ``CollectorRegistry``.

Names follow ``<prefix>_<name>_<unit>`` (``_seconds`` for durations, ``_total`` for counters); label sets are
small and fixed: ``route`` (the route template, never the raw path), ``status``, ``model``/``version`` (only
names of loaded bundles), ``reason`` (a fixed list), ``class_id`` (the model's classes). docs/service.md
lists them all.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.inference import BatchObserver

#: Reasons a request is refused, the values of the ``reason`` label of ``<prefix>_rejections_total``.
REJECTION_REASONS: tuple[str, ...] = (
    "payload_too_large",
    "unsupported_media_type",
    "empty_image",
    "invalid_image",
    "truncated_image",
    "animated_image",
    "image_too_large",
    "invalid_request",
    "model_not_found",
    "overloaded",
    "not_ready",
    "timeout",
    "unauthorized",
    "forbidden",
    "invalid_bundle",
    "inference_error",
    "non_finite_output",
    "not_found",
    "method_not_allowed",
    "http_error",
    "internal_error",
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
SCALE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0)
ROTATION_BUCKETS = (-45.0, -30.0, -20.0, -10.0, -5.0, -2.0, 0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 45.0)
#: ``le="0.0"`` counts the crops wholly inside the image; the other bounds follow the tail of inputs framed
#: tighter than the model expects.
OUTSIDE_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)


class ServiceMetrics:
    """Every metric of the service, registered on ``registry`` with names starting ``prefix``."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "stn"):
        self.registry = registry
        self.prefix = prefix
        p = prefix
        model = ("model", "version")
        self._image_metrics: dict[tuple[str, str], ImageMetrics] = {}
        self.requests = Counter(
            f"{p}_requests",
            "HTTP requests by route template and status code",
            ("route", "status"),
            registry=registry,
        )
        self.request_duration = Histogram(
            f"{p}_request_duration_seconds",
            "HTTP request duration, from the request line to the response sent",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(f"{p}_requests_in_flight", "HTTP requests being handled", registry=registry)
        self.client_disconnects = Counter(
            f"{p}_client_disconnects",
            "Requests whose client closed the connection before the response (their work is cancelled)",
            registry=registry,
        )
        self.rejections = Counter(
            f"{p}_rejections", "Requests refused, by reason (the error code)", ("reason",), registry=registry
        )
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        self.images = Counter(f"{p}_images_classified", "Images classified", model, registry=registry)
        self.decode_duration = Histogram(
            f"{p}_decode_duration_seconds",
            "Decoding, EXIF orientation, RGB conversion and resize of one image",
            model,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_duration = Histogram(
            f"{p}_queue_duration_seconds",
            "Time one image waited in the batch queue",
            model,
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            f"{p}_inference_duration_seconds",
            "Duration of one onnxruntime call (one batch)",
            model,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.encode_duration = Histogram(
            f"{p}_encode_duration_seconds",
            "Post-processing of one image: top-k, transform, crop rendering and PNG encoding",
            model,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{p}_batch_size", "Images per onnxruntime call", model, buckets=BATCH_BUCKETS, registry=registry
        )
        self.images_dropped = Counter(
            f"{p}_images_dropped",
            "Queued images removed before inference because their request ended (client gone, timeout)",
            model,
            registry=registry,
        )
        self.queue_depth = Gauge(
            f"{p}_queue_depth", "Images waiting in the batch queue", model, registry=registry
        )
        self.model_load_duration = Gauge(
            f"{p}_model_load_duration_seconds",
            "Duration of the last successful load of the model (checks and probe run included)",
            model,
            registry=registry,
        )
        self.model_info = Gauge(
            f"{p}_model_info",
            "1 for each loaded model; labels describe it",
            ("model", "version", "sha256", "warp_type", "sampler", "default"),
            registry=registry,
        )
        self.model_reloads = Counter(
            f"{p}_model_reloads",
            "Hot reloads by result (success | failure)",
            ("model", "result"),
            registry=registry,
        )
        self.predictions = Counter(
            f"{p}_predictions", "Top-1 predicted class", ("model", "version", "class_id"), registry=registry
        )
        self.confidence = Histogram(
            f"{p}_prediction_confidence",
            "Top-1 softmax probability",
            model,
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.transform_scale = Histogram(
            f"{p}_transform_scale",
            "Local scale of the predicted warp at the crop centre (1 = canonical box)",
            model,
            buckets=SCALE_BUCKETS,
            registry=registry,
        )
        self.transform_rotation = Histogram(
            f"{p}_transform_rotation_degrees",
            "Rotation of the predicted warp at the crop centre, degrees (positive: clockwise on screen)",
            model,
            buckets=ROTATION_BUCKETS,
            registry=registry,
        )
        self.crop_outside = Histogram(
            f"{p}_crop_outside_fraction",
            "Share of the predicted crop's area lying outside the uploaded image (0 = wholly inside)",
            model,
            buckets=OUTSIDE_BUCKETS,
            registry=registry,
        )

    def model_loaded(
        self, name: str, version: str, num_classes: int, load_seconds: float, info: dict[str, str]
    ) -> None:
        """Pre-create the model's series and record its load (info: sha256, warp_type, sampler, default)."""
        labels = (name, version)
        for metric in (
            self.images,
            self.decode_duration,
            self.queue_duration,
            self.inference_duration,
            self.encode_duration,
            self.batch_size,
            self.images_dropped,
            self.queue_depth,
            self.confidence,
            self.transform_scale,
            self.transform_rotation,
            self.crop_outside,
        ):
            metric.labels(*labels)
        for class_id in range(num_classes):
            self.predictions.labels(name, version, str(class_id))
        self.model_load_duration.labels(*labels).set(load_seconds)
        self.model_info.labels(*_info_labels(name, version, info)).set(1)

    def model_replaced(
        self,
        name: str,
        old_version: str,
        old_info: dict[str, str],
        new_version: str,
        new_info: dict[str, str],
    ) -> None:
        """Drop the gauges of a replaced model version (counters and histograms stay, as Prometheus expects).

        Series the replacement shares (same version, same info labels) are kept.
        """
        removals: list[tuple[Gauge, tuple[str, ...]]] = []
        if _info_labels(name, old_version, old_info) != _info_labels(name, new_version, new_info):
            removals.append((self.model_info, _info_labels(name, old_version, old_info)))
        if old_version != new_version:
            removals += [
                (self.queue_depth, (name, old_version)),
                (self.model_load_duration, (name, old_version)),
            ]
        for gauge, labels in removals:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def observer(self, name: str, version: str) -> BatchObserver:
        """The batcher hooks for one model version."""
        return _MetricsObserver(self, name, version)

    def image_metrics(self, name: str, version: str) -> ImageMetrics:
        """The per-image series of one model version, bound once (see :class:`ImageMetrics`)."""
        key = (name, version)
        bound = self._image_metrics.get(key)
        if bound is None:
            bound = self._image_metrics[key] = ImageMetrics(self, name, version)
        return bound


def _info_labels(name: str, version: str, info: dict[str, str]) -> tuple[str, ...]:
    return (name, version, info["sha256"], info["warp_type"], info["sampler"], info["default"])


class _MetricsObserver(BatchObserver):
    def __init__(self, metrics: ServiceMetrics, name: str, version: str):
        self._depth = metrics.queue_depth.labels(name, version)
        self._batch = metrics.batch_size.labels(name, version)
        self._inference = metrics.inference_duration.labels(name, version)
        self._queue = metrics.queue_duration.labels(name, version)
        self._dropped = metrics.images_dropped.labels(name, version)

    def queue_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def batch(self, size: int, inference_seconds: float, queue_seconds: list[float]) -> None:
        self._batch.observe(size)
        self._inference.observe(inference_seconds)
        for wait in queue_seconds:
            self._queue.observe(wait)

    def dropped(self, count: int) -> None:
        self._dropped.inc(count)


class ImageMetrics:
    """The series a classified image updates, for one model version, with their labels bound once.

    ``labels(...)`` takes a lock and a dict lookup per call; a classified image updates eight series, so the
    request path keeps the bound children (the same series as ``labels(name, version)`` gives).
    """

    def __init__(self, metrics: ServiceMetrics, name: str, version: str):
        self._decode = metrics.decode_duration.labels(name, version)
        self._encode = metrics.encode_duration.labels(name, version)
        self._images = metrics.images.labels(name, version)
        self._confidence = metrics.confidence.labels(name, version)
        self._scale = metrics.transform_scale.labels(name, version)
        self._rotation = metrics.transform_rotation.labels(name, version)
        self._outside = metrics.crop_outside.labels(name, version)
        self._predictions = metrics.predictions
        self._labels = (name, version)
        self._classes: dict[int, Counter] = {}

    def decoded(self, seconds: float) -> None:
        """An image was decoded in ``seconds``."""
        self._decode.observe(seconds)

    def classified(
        self,
        class_id: int,
        confidence: float,
        encode_seconds: float,
        transform: tuple[float, float, float] | None,
    ) -> None:
        """An image was classified: its top-1 class and probability, its post-processing time, and its
        transform's (scale, rotation in degrees, outside fraction) when the warp was not degenerate."""
        self._encode.observe(encode_seconds)
        self._images.inc()
        counter = self._classes.get(class_id)
        if counter is None:
            counter = self._classes[class_id] = self._predictions.labels(*self._labels, str(class_id))
        counter.inc()
        self._confidence.observe(confidence)
        if transform is not None:
            scale, rotation, outside = transform
            self._scale.observe(scale)
            self._rotation.observe(rotation)
            self._outside.observe(outside)
