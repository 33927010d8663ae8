"""Where a classify request's CPU goes: each stage of one small-image request, in process and end to end.

Not a test. Everything runs on one server core (``--core``), single-threaded, on real GTSRB test photos
(``test_originals``, the same uploads as benchmarks/service_load.py):

* **Stages in process** (microseconds per image, the best of ``--repeats`` passes over ``--images`` photos):
  HTTP/1.1 parsing of the prebuilt request (httptools, uvicorn's parser), the multipart form, opening the
  image (header), decoding and resizing it, onnxruntime at batch 1, 8 and 16 (per image), the post-processing
  without and with the default JPEG crop, and the JSON body.
* **The application in process**: the ASGI application (``create_app``) called directly with 16 concurrent
  requests and no network, CPU time per request; once with the real model and once with onnxruntime replaced
  by cached outputs of the same shapes ("everything but the network"), whose difference is the model as it
  runs inside the service.
* **End to end**: ``python -m service`` (``--server``) pinned to the core, a closed loop of 16 keep-alive
  connections from this process on ``--client-core``, server CPU time per request (``/proc``).

What the stages do not explain is printed as "framework" (Starlette/FastAPI, the request middleware, the
batcher, metrics, the access log) and "HTTP server + kernel" (the end-to-end CPU minus the in-process
application's). docs/benchmarks.md ("Where a request's time goes") shows a run.

    .venv/bin/python -m benchmarks.request_profile --json .bench/request_profile.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load.commands import service_argv
from benchmarks.load.http import Connection, multipart_request
from benchmarks.load.procfs import tree_stats
from benchmarks.load.servers import LOOPBACK, free_port, http_get
from benchmarks.load.settings import REPO

CONCURRENCY = 16


def per_item_us(step: Callable[[Any], object], items: list[Any], repeats: int) -> float:
    """Best of ``repeats`` passes: microseconds per call of ``step`` over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            step(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best * 1e6


def stage_timings(
    uploads: list[tuple[str, bytes]], models_dir: Path, model: str, repeats: int
) -> dict[str, float]:
    """Microseconds per image of each stage of the request path, run on their own."""
    import httptools
    import orjson

    from service.bundles import read_card
    from service.inference import ImageOutputs, create_session, run_batch
    from service.multipart import boundary_of, parse_form
    from service.pipeline import Upload, load_step, open_step, postprocess_step
    from service.settings import Settings

    folder = models_dir / model
    card = read_card(folder)
    session = create_session(folder / "model.onnx", Settings(intra_op_threads=1, execution_provider="cpu"))
    requests = [
        multipart_request(
            host=LOOPBACK,
            port=80,
            path="/v1/classify",
            field="file",
            filename=n,
            data=d,
            content_type="image/png",
        )
        for n, d in uploads
    ]

    def parse_http(raw: bytes) -> None:
        httptools.HttpRequestParser(_NullProtocol()).feed_data(raw)

    heads = [r.split(b"\r\n\r\n", 1) for r in requests]
    kinds = [
        next(x for x in h.split(b"\r\n") if x.startswith(b"Content-Type")).split(b": ", 1)[1]
        for h, _ in heads
    ]
    bodies = [(b, k.decode()) for (_, b), k in zip(heads, kinds, strict=True)]
    max_pixels = 40_000_000
    opened_uploads = [Upload(d, n) for n, d in uploads]
    decoded = [load_step(open_step(u, max_pixels), card) for u in opened_uploads]
    tensors = np.stack([d.tensor for d in decoded])
    outputs = []
    for d in decoded:
        logits, warp, crop = run_batch(session, card, d.tensor[None])
        outputs.append(ImageOutputs(logits[0], warp[0], crop[0], 1, 0.0, 0.0))
    pairs = list(zip(decoded, outputs, strict=True))

    def postprocess(crop: str) -> Callable[[Any], object]:
        def step(pair: Any) -> object:
            return postprocess_step(
                pair[0],
                pair[1],
                model_name=model,
                card=card,
                k=5,
                crop_format=crop,
                crop_size=128,
                request_start=0.0,
            )

        return step

    answers = [postprocess("jpeg")(p) for p in pairs]
    timings = {
        "http_parse": per_item_us(parse_http, requests, repeats),
        "multipart": per_item_us(
            lambda b: parse_form(b[0], boundary_of(b[1]), max_files=32, max_fields=100), bodies, repeats
        ),
        "open": per_item_us(lambda u: open_step(u, max_pixels).image.close(), opened_uploads, repeats),
        "decode_resize": per_item_us(
            lambda u: load_step(open_step(u, max_pixels), card), opened_uploads, repeats
        ),
        "postprocess_none": per_item_us(postprocess("none"), pairs, repeats),
        "postprocess_jpeg": per_item_us(postprocess("jpeg"), pairs, repeats),
        "json_body": per_item_us(lambda a: orjson.dumps({"results": [a.result]}), answers, repeats),
    }
    timings["decode_resize"] -= timings["open"]
    for size in (1, 8, 16):
        batches = [tensors[i : i + size] for i in range(0, len(tensors) - size + 1, size)]
        timings[f"inference_batch{size}"] = (
            per_item_us(lambda b: run_batch(session, card, b), batches, repeats) / size
        )
    return timings


class _NullProtocol:
    """httptools callbacks that keep nothing (the parse itself is what is timed)."""

    def on_body(self, body: bytes) -> None:
        pass


def asgi_cpu_per_request(
    uploads: list[tuple[str, bytes]], models_dir: Path, model: str, count: int, stub_inference: bool
) -> float:
    """CPU microseconds per ``POST /v1/classify?crop=none`` of the ASGI application called in process,
    ``CONCURRENCY`` requests at a time (:mod:`benchmarks.load.asgi_direct`, in a child process that inherits
    this process's core); with ``stub_inference`` onnxruntime's outputs are cached per batch size."""
    argv = [sys.executable, "-m", "benchmarks.load.asgi_direct", str(models_dir), model, str(count)]
    argv += [str(CONCURRENCY), "1" if stub_inference else "0"]
    payload = json.dumps([[n, d.hex()] for n, d in uploads])
    out = subprocess.run(argv, input=payload, capture_output=True, text=True, check=True, cwd=REPO).stdout
    return float(out.strip().splitlines()[-1])


@contextlib.contextmanager
def running_server(models_dir: Path, model: str, server: str, core: int) -> Iterator[tuple[int, int]]:
    """``python -m service`` pinned to ``core`` on a free port; yields (port, pid) once ready."""
    port = free_port()
    env = {
        **os.environ,
        "SERVICE_DEFAULT_MODEL": model,
        "SERVICE_EXECUTION_PROVIDER": "cpu",
        "SERVICE_INTRA_OP_THREADS": "1",
        "SERVICE_LOG_LEVEL": "info",
    }
    argv = ["taskset", "-c", str(core), *service_argv(port, models_dir, server)]
    with open(os.devnull, "wb") as sink:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=sink, stderr=sink, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while http_get(LOOPBACK, port, "/v2/health/ready", 2.0)[0] != 200:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start ({server})")
                time.sleep(0.2)
            yield port, process.pid
        finally:
            os.killpg(process.pid, 15)
            process.wait(30)


def end_to_end(
    uploads: list[tuple[str, bytes]], models_dir: Path, model: str, server: str, core: int, seconds: float
) -> dict[str, float]:
    """Closed loop of ``CONCURRENCY`` connections for ``seconds``: req/s and server CPU µs per request."""
    with running_server(models_dir, model, server, core) as (port, pid):
        requests = [
            multipart_request(
                host=LOOPBACK, port=port, path="/v1/classify?crop=none", field="file", filename=n, data=d,
                content_type="image/png",
            )
            for n, d in uploads
        ]  # fmt: skip

        async def load(duration: float) -> int:
            done = 0
            stop = time.perf_counter() + duration

            async def client(k: int) -> None:
                nonlocal done
                connection = Connection(LOOPBACK, port)
                i = k
                while time.perf_counter() < stop:
                    status, _ = await connection.send(requests[i % len(requests)])
                    if status != 200:
                        raise RuntimeError(f"status {status}")
                    done += 1
                    i += CONCURRENCY
                connection.close()

            await asyncio.gather(*(client(k) for k in range(CONCURRENCY)))
            return done

        asyncio.run(load(3.0))  # warm-up
        before = tree_stats(pid).cpu_s
        start = time.perf_counter()
        count = asyncio.run(load(seconds))
        wall = time.perf_counter() - start
        cpu = tree_stats(pid).cpu_s - before
    return {"requests_per_s": count / wall, "server_cpu_us_per_request": cpu / count * 1e6}


def main(argv: list[str] | None = None) -> None:
    """Measure, print the table, write --json."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--model", default=None, help="bundle (default: models/DEFAULT)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("GTSRB_DATA_DIR", REPO.parent / "shared/data/gtsrb")),
    )
    parser.add_argument("--images", type=int, default=256, help="test photos used (the first N by name)")
    parser.add_argument("--repeats", type=int, default=5, help="passes per stage (the best is kept)")
    parser.add_argument("--requests", type=int, default=3000, help="requests of each in-process run")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds end to end")
    parser.add_argument("--server", nargs="+", default=["uvicorn", "granian"], choices=["uvicorn", "granian"])
    parser.add_argument("--core", type=int, default=0, help="the server's core (stages run there too)")
    parser.add_argument("--client-core", type=int, default=1, help="the load generator's core")
    parser.add_argument("--json", type=Path, dest="json_path")
    args = parser.parse_args(argv)

    model = args.model or (args.models_dir / "DEFAULT").read_text().strip()
    files = sorted((args.data_dir / "test_originals").glob("*.png"))[: args.images]
    if not files:
        raise SystemExit(f"no PNG in {args.data_dir / 'test_originals'}")
    uploads = [(f.name, f.read_bytes()) for f in files]
    os.sched_setaffinity(0, {args.core})
    stages = stage_timings(uploads, args.models_dir, model, args.repeats)
    app_full = asgi_cpu_per_request(uploads, args.models_dir, model, args.requests, stub_inference=False)
    app_stub = asgi_cpu_per_request(uploads, args.models_dir, model, args.requests, stub_inference=True)
    os.sched_setaffinity(0, {args.client_core})
    e2e = {s: end_to_end(uploads, args.models_dir, model, s, args.core, args.seconds) for s in args.server}

    own = ("multipart", "open", "decode_resize", "postprocess_none", "json_body")
    rows: list[tuple[str, float]] = [(name, stages[name]) for name in own]
    rows.append(
        ("framework, middleware, batcher, metrics, access log", app_stub - sum(stages[n] for n in own))
    )
    rows.append(("onnxruntime as run in the service (app - app without it)", app_full - app_stub))
    print(f"model {model}, {len(uploads)} photos, core {args.core}; microseconds per request (crop=none)\n")
    print("| stage | us/request | share of end-to-end CPU (" + ", ".join(args.server) + ") |")
    print("|---|---:|---|")
    for name, value in rows:
        shares = ", ".join(f"{100 * value / e2e[s]['server_cpu_us_per_request']:.0f}%" for s in args.server)
        print(f"| {name} | {value:.0f} | {shares} |")
    for s in args.server:
        http = e2e[s]["server_cpu_us_per_request"] - app_full
        print(f"| HTTP server + kernel ({s}: end to end - app in process) | {http:.0f} | "
              f"{100 * http / e2e[s]['server_cpu_us_per_request']:.0f}% |")  # fmt: skip
    print("\nin process, for reference:")
    for name in (
        "http_parse",
        "inference_batch1",
        "inference_batch8",
        "inference_batch16",
        "postprocess_jpeg",
    ):
        print(f"  {name}: {stages[name]:.0f} us per image")
    print(f"  application in process: {app_full:.0f} us per request, {app_stub:.0f} without onnxruntime")
    for s in args.server:
        print(
            f"  end to end, {s}: {e2e[s]['requests_per_s']:.0f} req/s, "
            f"{e2e[s]['server_cpu_us_per_request']:.0f} us of server CPU per request"
        )
    if args.json_path is not None:
        report = {"model": model, "images": len(uploads), "stages_us": stages, "app_us": app_full,
                  "app_without_inference_us": app_stub, "end_to_end": e2e}  # fmt: skip
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
