"""Service settings, read from ``SERVICE_*`` environment variables by pydantic-settings.

Nothing is built at import time: :func:`get_settings` builds the settings on first use and caches them; tests
and ``python -m service`` pass their own :class:`Settings` to :func:`service.app.create_app` instead.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SERVICE_"

#: The one bound on a request's ``crop_size``, used by the classify routes' query parameter (so the OpenAPI
#: schema) and by ``SERVICE_MAX_CROP_SIZE`` (its default and upper bound: the setting can only lower it).
MIN_CROP_SIZE: Final = 8
MAX_CROP_SIZE: Final = 512


def default_models_dir() -> Path:
    """The repository's ``models/`` folder, found relative to this package (``<repo>/service/../models``).

    From an installed wheel that folder does not exist: set ``SERVICE_MODELS_DIR`` (the Docker image does).
    """
    return Path(__file__).resolve().parent.parent / "models"


class Settings(BaseSettings):
    """Every tunable of the service; each field is the environment variable ``SERVICE_<FIELD>``.

    docs/service.md lists them all with their defaults; keep that table in step with this class.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Where the models are.
    models_dir: Path = Field(default_factory=default_models_dir, description="model repository folder")
    default_model: str | None = Field(
        default=None, description="bundle served by /v1/classify; overrides models/DEFAULT"
    )

    # Network (used by `python -m service`; --host/--port override them).
    host: str = Field(default="127.0.0.1", description="address uvicorn binds")
    port: int = Field(default=8000, ge=0, le=65535, description="port uvicorn binds")

    server: Literal["granian", "uvicorn"] = Field(
        default="uvicorn",
        description="HTTP server of `python -m service`: uvicorn (httptools, uvloop) or granian (Rust HTTP "
        "front end, the `granian` extra); both serve the same application, uvicorn measured faster here "
        "(docs/benchmarks.md)",
    )

    # Admin API.
    api_key: SecretStr | None = Field(
        default=None, description="key for the admin routes (X-API-Key header); unset disables them"
    )

    # Dynamic batching and admission control.
    max_batch_size: int = Field(default=16, ge=1, le=1024, description="most images in one onnxruntime call")
    max_delay_ms: float = Field(
        default=2.0, ge=0.0, le=1000.0, description="longest wait for more images before a batch runs"
    )
    batch_wait: Literal["adaptive", "fixed"] = Field(
        default="adaptive",
        description="adaptive: a partial batch waits up to max_delay_ms only while other admitted requests "
        "have yet to queue their images (a lone request runs at once); fixed: it always waits max_delay_ms",
    )
    queue_size: int = Field(
        default=256, ge=1, description="images waiting per model before 503 + Retry-After"
    )
    max_concurrent_requests: int = Field(
        default=128,
        ge=1,
        description="classify/infer requests in progress at once (all models); more get 503 + Retry-After",
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After value sent with 503 responses")
    request_timeout_s: float = Field(
        default=30.0, gt=0.0, description="per-request limit from body read to response (504 past it)"
    )

    # Input limits.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="request body limit (413)")
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="declared width*height limit, checked before decoding"
    )
    max_images_per_request: int = Field(default=32, ge=1, description="images per classify/infer request")
    max_crop_size: int = Field(
        default=MAX_CROP_SIZE,
        ge=MIN_CROP_SIZE,
        le=MAX_CROP_SIZE,
        description=f"largest crop_size a request may ask for (at most {MAX_CROP_SIZE}, the schema's bound)",
    )

    # Threads: onnxruntime runs in a bounded executor off the event loop.
    inference_workers: int = Field(
        default=1, ge=1, description="concurrent onnxruntime calls (executor threads, one batch each)"
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime intra-op threads per call; 0 = CPU count / workers"
    )
    decode_workers: int = Field(default=2, ge=1, description="threads decoding images and encoding crops")
    inline_max_pixels: int = Field(
        default=65_536,
        ge=0,
        description="images of at most this many pixels (and crops of at most this many) are decoded and "
        "post-processed on the event loop, larger ones in the decode threads; on one core a thread hand-off "
        "costs more than a small image (docs/benchmarks.md); 0 = always in the threads",
    )
    execution_provider: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when onnxruntime offers it, else CPU"
    )
    ort_allow_spinning: bool = Field(
        default=False, description="let onnxruntime threads spin between calls (lower latency, busy CPU)"
    )

    # Operations.
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="log level")
    log_format: Literal["json", "text"] = Field(default="json", description="structured JSON or plain text")
    metrics_prefix: str = Field(default="stn", description="prefix of every Prometheus metric name")
    shutdown_timeout_s: float = Field(
        default=20.0, ge=0.0, description="graceful shutdown: wait this long for in-flight requests"
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        """An empty SERVICE_API_KEY (as compose passes an unset variable) disables the admin API."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @field_validator("metrics_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or not (value[0].isalpha() and value.replace("_", "").isalnum() and value.isascii()):
            raise ValueError(f"metrics_prefix must match [a-zA-Z][a-zA-Z0-9_]*, got {value!r}")
        return value

    def resolved_intra_op_threads(self) -> int:
        """onnxruntime intra-op threads per call: the setting, or usable cores / inference workers (>= 1).

        Usable cores are the process's CPU affinity (``taskset``, a container's cpuset), not every core of the
        machine: threads beyond them only contend.
        """
        if self.intra_op_threads > 0:
            return self.intra_op_threads
        return max(1, usable_cpus() // self.inference_workers)


def usable_cpus() -> int:
    """Cores this process may run on: its CPU affinity where the OS reports one, else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment, built once (a FastAPI dependency; tests override it)."""
    return Settings()
