"""``service.asgi:create_app_from_environment``: the application factory an ASGI server imports by name.

Granian starts its worker processes by importing the application; its worker calls this factory, which builds
the settings from the environment (``SERVICE_*``; ``python -m service`` puts its command-line options there
first), configures logging and returns :func:`service.app.create_app`'s application.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings


def create_app_from_environment() -> FastAPI:
    """The service built from ``SERVICE_*`` environment variables, with logging configured."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
