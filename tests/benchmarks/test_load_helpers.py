"""Small pieces of benchmarks/load: the server command line and the py-spy profile summary."""

from __future__ import annotations

import pytest

from benchmarks.load import commands
from benchmarks.load.settings import parse_config
from benchmarks.load.stacks import summarise


@pytest.mark.parametrize(
    ("server", "expected"), [("default", None), ("uvicorn", "uvicorn"), ("granian", "granian")]
)
def test_our_server_command_names_the_chosen_server(server: str, expected: str | None) -> None:
    config = parse_config(["--server", server, "--server-cores", "", "--client-cores", ""])
    argv = commands.ours(config, "on", 8123).argv
    if expected is None:
        assert "--server" not in argv  # the service's own default (SERVICE_SERVER)
    else:
        assert argv[argv.index("--server") + 1] == expected


def test_profile_summary_counts_each_function_once_per_sample() -> None:
    lines = [
        "thread (1): MainThread;main (a.py:1);f (a.py:2);f (a.py:9);g (b.py:3) 3",
        "main (a.py:1);h (c.py:4) 1",  # recorded without --threads: no thread frame
        "",
    ]
    total, inclusive, own = summarise(lines)
    assert total == 4
    assert inclusive["main (a.py)"] == 4
    assert inclusive["f (a.py)"] == 3  # twice in one stack, counted once
    assert own == {"g (b.py)": 3, "h (c.py)": 1}
