"""The JSON Schema of ``model.json``, generated from :class:`service.contract.card.ModelCard`.

The published copy is docs/model-card.schema.json; a test fails when it differs from the model. Regenerate it
with::

    python -m service.contract.schema docs/model-card.schema.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from service.contract.card import ModelCard

PUBLISHED = "docs/model-card.schema.json"
"""Where the schema is published, relative to the repository root."""
REGENERATE = f"python -m service.contract.schema {PUBLISHED}"


def card_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a card as the service validates it."""
    schema = ModelCard.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def render() -> str:
    """The published file's text: the schema as indented JSON with a final newline."""
    return json.dumps(card_json_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema to the given file, or print it."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        Path(args[0]).write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
