"""The service's error hierarchy: every error a client can cause is a :class:`ServiceError`.

One exception handler (``service.app``) turns any of them into the JSON body
``{"error": {"code": ..., "message": ..., "request_id": ...}}`` with the class's HTTP status
(the Open Inference Protocol routes under ``/v2`` use that protocol's ``{"error": message}`` instead).
A body over the size limit is the one exception: the request middleware raises
:class:`service.middleware.BodyTooLarge`, a Starlette ``HTTPException`` (413), because FastAPI turns any other
exception raised while it reads a JSON body into a 400.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: an HTTP status, a stable machine-readable ``code`` and a human-readable message."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidRequest(ServiceError):
    """A query parameter, form field or JSON body is invalid (422)."""

    status_code = 422
    code = "invalid_request"


class UnsupportedMediaType(ServiceError):
    """The content type is not an accepted image type or multipart form (415)."""

    status_code = 415
    code = "unsupported_media_type"


class InvalidImage(ServiceError):
    """The upload is not a usable still image: empty, undecodable, truncated, animated, too many pixels (422).

    ``code`` tells which: ``empty_image``, ``invalid_image``, ``truncated_image``, ``animated_image``,
    ``image_too_large``.
    """

    status_code = 422
    code = "invalid_image"


class ModelNotFound(ServiceError):
    """No bundle of that name is loaded (404)."""

    status_code = 404
    code = "model_not_found"


class Unauthorized(ServiceError):
    """An admin route was called without an API key (401)."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """An admin route was called with a wrong key, or the admin API is disabled (403)."""

    status_code = 403
    code = "forbidden"


class Overloaded(ServiceError):
    """The model's batch queue is full: retry after ``Retry-After`` seconds (503)."""

    status_code = 503
    code = "overloaded"


class NotReady(ServiceError):
    """No model is loaded, or the service is shutting down (503)."""

    status_code = 503
    code = "not_ready"


class RequestTimeout(ServiceError):
    """The request did not finish within ``request_timeout_s`` (504)."""

    status_code = 504
    code = "timeout"


class BundleError(ServiceError):
    """A model bundle does not match docs/model-bundle.md; the message names the file and the check (422)."""

    status_code = 422
    code = "invalid_bundle"


class InferenceError(ServiceError):
    """onnxruntime failed or returned arrays of the wrong shape at serving time (500)."""

    status_code = 500
    code = "inference_error"


class NonFiniteOutput(ServiceError):
    """The model's output for a valid input is not finite (NaN or infinity) (422).

    JSON has no NaN or infinity, so such an output is never sent; the request fails with this clear error
    instead of a 500 from the JSON encoder.
    """

    status_code = 422
    code = "non_finite_output"
