"""``python -m service [--host H] [--port P] [--models-dir DIR] [--server NAME]``: start the service.

The options override SERVICE_HOST, SERVICE_PORT, SERVICE_MODELS_DIR and SERVICE_SERVER; every other setting
comes from the environment (docs/service.md). Both servers run the same ASGI application, one process, and
drain in-flight requests on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from service.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="address to bind (SERVICE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (SERVICE_PORT, default 8000)")
    parser.add_argument("--models-dir", type=Path, help="model repository folder (SERVICE_MODELS_DIR)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="SERVICE_LOG_LEVEL, default info"
    )
    parser.add_argument(
        "--server", choices=["granian", "uvicorn"], help="HTTP server (SERVICE_SERVER, default uvicorn)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the settings (environment + options) and run the chosen server until SIGINT/SIGTERM."""
    args = parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "models_dir": args.models_dir,
            "log_level": args.log_level,
            "server": args.server,
        }.items()
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.server == "granian":
        return run_granian(settings, overrides)
    return run_uvicorn(settings)


def run_granian(settings: Settings, overrides: dict[str, object]) -> int:
    """Serve with Granian (Rust HTTP/1.1 and HTTP/2, ASGI), one worker process, until SIGINT/SIGTERM.

    Granian's worker builds the application itself (:func:`service.asgi.create_app_from_environment`), so
    the command-line overrides travel to it as ``SERVICE_*`` variables. On SIGTERM Granian stops accepting,
    lets in-flight requests finish, then runs the lifespan's shutdown (which drains the batch queues).
    """
    try:
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.log import LogLevels
    except ModuleNotFoundError:
        print(
            "SERVICE_SERVER=granian, but granian is not installed: pip install 'stn-signs[granian]' "
            "(or use the default server, uvicorn)",
            file=sys.stderr,
        )
        return 2

    for key, value in overrides.items():
        os.environ[f"SERVICE_{key.upper()}"] = str(value)
    Granian(
        "service.asgi:create_app_from_environment",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        websockets=False,
        log_level=LogLevels(settings.log_level),
        log_access=False,
        workers_kill_timeout=int(settings.shutdown_timeout_s) + 5,
    ).serve()
    return 0


def run_uvicorn(settings: Settings) -> int:
    """Serve with uvicorn (httptools, uvloop) in this process until SIGINT/SIGTERM."""
    import uvicorn

    from service.app import create_app
    from service.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
