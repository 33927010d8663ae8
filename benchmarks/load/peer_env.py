"""The throw-away virtualenv that runs the BentoML peer (BentoML is never a dependency of the project)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: Written into the virtualenv after a successful install; a later run reuses the virtualenv when it matches.
MARKER = "stn-bench-requirements.txt"

_VERSIONS = (
    "import json, platform, bentoml, onnxruntime, PIL, numpy; "
    "print(json.dumps({'bentoml': bentoml.__version__, 'onnxruntime': onnxruntime.__version__, "
    "'pillow': PIL.__version__, 'numpy': numpy.__version__, 'python': platform.python_version()}))"
)


@dataclass(frozen=True)
class PeerEnv:
    """An installed peer virtualenv: its ``bentoml`` executable and the versions it holds."""

    venv: Path
    bentoml: Path
    versions: dict[str, str]


def ensure_peer_venv(venv: Path, requirements: list[str], python: str = sys.executable) -> PeerEnv:
    """Create ``venv`` with ``python -m venv`` and pip-install ``requirements`` into it, unless a previous run
    already installed exactly these requirements there.

    Raises:
        subprocess.CalledProcessError: venv creation or pip failed (pip's output is on stderr).
    """
    marker = venv / MARKER
    wanted = "\n".join(requirements) + "\n"
    bin_dir = venv / "bin"
    if not (marker.is_file() and marker.read_text() == wanted and (bin_dir / "bentoml").is_file()):
        print(f"installing the BentoML peer into {venv}: {' '.join(requirements)}", flush=True)
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *requirements], check=True)
        marker.write_text(wanted)
    out = subprocess.run(
        [str(bin_dir / "python"), "-c", _VERSIONS], check=True, capture_output=True, text=True
    ).stdout
    return PeerEnv(venv=venv, bentoml=bin_dir / "bentoml", versions=json.loads(out.strip().splitlines()[-1]))
