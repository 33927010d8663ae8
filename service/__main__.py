"""``python -m service [--host H] [--port P] [--models-dir DIR]``: start the service with uvicorn.

The options override SERVICE_HOST, SERVICE_PORT and SERVICE_MODELS_DIR; every other setting comes from the
environment (docs/service.md).
"""

from __future__ import annotations

import argparse
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the settings (environment + options), configure logging and run uvicorn until SIGINT/SIGTERM."""
    args = parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "models_dir": args.models_dir,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2

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
