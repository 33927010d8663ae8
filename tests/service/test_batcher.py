"""The dynamic batcher on its own: gathering, bounded queue, failures, draining (asyncio, no HTTP)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from service.errors import InferenceError, NotReady, Overloaded
from service.inference import BatchObserver, DynamicBatcher, select_providers


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.depths: list[int] = []
        self.dropped_images = 0

    def queue_depth(self, depth: int) -> None:
        self.depths.append(depth)

    def batch(self, size: int, inference_seconds: float, queue_seconds: list[float]) -> None:
        self.sizes.append(size)

    def dropped(self, count: int) -> None:
        self.dropped_images += count


def fake_runner(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """logits = per-image mean (so results can be matched to inputs), identity warps, zero crops."""
    n = images.shape[0]
    logits = np.repeat(images.mean(axis=(1, 2, 3))[:, None], 4, axis=1).astype(np.float32)
    return logits, np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)), np.zeros((n, 3, 2, 2), np.float32)


def image(value: float) -> np.ndarray:
    return np.full((3, 4, 4), value, dtype=np.float32)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def make(runner: Any = fake_runner, **kwargs: Any) -> tuple[DynamicBatcher, Recorder, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1)
    recorder = Recorder()
    options = {"max_batch_size": 8, "max_delay_s": 0.05, "queue_size": 16} | kwargs
    return DynamicBatcher(runner, executor=executor, observer=recorder, **options), recorder, executor


def test_concurrent_submissions_share_one_call() -> None:
    async def main() -> tuple[list[float], Recorder]:
        batcher, recorder, executor = make()
        batcher.start()
        futures = [f for v in range(5) for f in batcher.submit([image(float(v))])]
        results = await asyncio.gather(*futures)
        await batcher.close()
        executor.shutdown()
        return [float(r.logits[0]) for r in results], recorder

    values, recorder = run(main())
    assert values == [0.0, 1.0, 2.0, 3.0, 4.0]  # each caller gets its own row back
    assert recorder.sizes == [5]


def test_batches_are_capped_at_max_batch_size() -> None:
    async def main() -> Recorder:
        batcher, recorder, executor = make(max_batch_size=3, max_delay_s=0.0)
        batcher.start()
        await asyncio.gather(*batcher.submit([image(float(v)) for v in range(7)]))
        await batcher.close()
        executor.shutdown()
        return recorder

    assert run(main()).sizes == [3, 3, 1]


def test_full_queue_refuses_at_once_with_retry_after() -> None:
    release = threading.Event()

    def blocked(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        release.wait(5)
        return fake_runner(images)

    async def main() -> None:
        batcher, _, executor = make(blocked, max_batch_size=1, max_delay_s=0.0, queue_size=2, retry_after_s=3)
        batcher.start()
        first = batcher.submit([image(0.0)])
        while batcher.depth:  # the consumer took the first image and is blocked in the executor
            await asyncio.sleep(0.001)
        queued = batcher.submit([image(1.0), image(2.0)])
        with pytest.raises(Overloaded) as info:
            batcher.submit([image(3.0)])
        assert info.value.headers == {"Retry-After": "3"}
        assert info.value.status_code == 503
        release.set()
        results = await asyncio.gather(*first, *queued)
        assert [float(r.logits[0]) for r in results] == [0.0, 1.0, 2.0]
        await batcher.close()
        executor.shutdown()

    run(main())


def test_all_or_nothing_admission() -> None:
    async def main() -> None:
        batcher, _, executor = make(queue_size=3)
        # not started: nothing is consumed, so the queue only fills
        batcher._wakeup = asyncio.Event()
        batcher.submit([image(0.0), image(1.0)])
        with pytest.raises(Overloaded):
            batcher.submit([image(2.0), image(3.0)])
        assert batcher.depth == 2
        executor.shutdown()

    run(main())


def test_runner_failure_reaches_every_caller_and_the_batcher_survives() -> None:
    calls = {"n": 0}

    def flaky(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return fake_runner(images)

    async def main() -> None:
        batcher, _, executor = make(flaky)
        batcher.start()
        results = await asyncio.gather(*batcher.submit([image(1.0), image(2.0)]), return_exceptions=True)
        assert all(isinstance(r, InferenceError) and "boom" in r.message for r in results)
        ok = await asyncio.gather(*batcher.submit([image(5.0)]))
        assert float(ok[0].logits[0]) == 5.0
        await batcher.close()
        executor.shutdown()

    run(main())


def test_cancelled_requests_are_skipped() -> None:
    release = threading.Event()
    seen: list[int] = []

    def blocked(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        release.wait(5)
        seen.append(images.shape[0])
        return fake_runner(images)

    async def main() -> None:
        batcher, _, executor = make(blocked, max_delay_s=0.0)
        batcher.start()
        first = batcher.submit([image(0.0)])
        while batcher.depth:
            await asyncio.sleep(0.001)
        gone = batcher.submit([image(1.0), image(2.0)])
        kept = batcher.submit([image(3.0)])
        for future in gone:
            future.cancel()  # what a timed-out request does
        release.set()
        await asyncio.gather(*first, *kept)
        await batcher.close()
        executor.shutdown()

    run(main())
    assert seen == [1, 1]


def test_cancelled_images_leave_the_queue_at_once() -> None:
    """A request that ends (its client left, or it timed out) frees its places in the queue while inference is
    still busy, and its images are counted as dropped, never run."""
    release = threading.Event()
    seen: list[float] = []

    def blocked(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        release.wait(5)
        seen.extend(float(v) for v in images.mean(axis=(1, 2, 3)))
        return fake_runner(images)

    async def main() -> Recorder:
        batcher, recorder, executor = make(blocked, max_batch_size=1, max_delay_s=0.0, queue_size=3)
        batcher.start()
        first = batcher.submit([image(0.0)])
        while batcher.depth:  # the first image is in the executor, blocked
            await asyncio.sleep(0.001)
        gone = batcher.submit([image(1.0), image(2.0)])
        kept = batcher.submit([image(3.0)])
        with pytest.raises(Overloaded):
            batcher.submit([image(4.0)])
        for future in gone:
            future.cancel()
        await asyncio.sleep(0)  # the futures' done callbacks run
        assert batcher.depth == 1 and recorder.depths[-1] == 1
        again = batcher.submit([image(5.0), image(6.0)])  # fits now, with inference still blocked
        release.set()
        await asyncio.gather(*first, *kept, *again)
        await batcher.close()
        executor.shutdown()
        return recorder

    recorder = run(main())
    assert seen == [0.0, 3.0, 5.0, 6.0]
    assert recorder.dropped_images == 2


def test_close_drains_accepted_work_then_refuses() -> None:
    async def main() -> None:
        batcher, _, executor = make(max_delay_s=0.02)
        batcher.start()
        futures = batcher.submit([image(1.0), image(2.0)])
        await batcher.close()
        assert all(f.done() and not f.exception() for f in futures)
        with pytest.raises(NotReady):
            batcher.submit([image(3.0)])
        executor.shutdown()

    run(main())


def test_provider_selection() -> None:
    cpu = ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("auto", cpu) == cpu
    assert select_providers("auto", both) == both
    assert select_providers("cpu", both) == cpu
    with pytest.raises(ValueError, match="offers only"):
        select_providers("cuda", cpu)


def test_adaptive_wait_runs_a_lone_request_at_once_and_waits_for_reserved_ones() -> None:
    """With the adaptive wait, a partial batch waits only for reservations that have not submitted yet."""

    async def main() -> tuple[list[int], list[int], int]:
        # A 30 s max delay: a batch that waited for it would not finish before the 10 s timeout below.
        batcher, recorder, executor = make(max_delay_s=30.0, adaptive_wait=True)
        batcher.start()
        with batcher.reserve() as lone:
            assert batcher.reserved == 1
            async with asyncio.timeout(10):
                await asyncio.gather(*lone.submit([image(1.0)]))
            assert batcher.reserved == 0
        alone = list(recorder.sizes)
        with batcher.reserve() as first, batcher.reserve() as second:
            early = first.submit([image(2.0)])
            await asyncio.sleep(0.05)  # the batch holds for ``second``, which has yet to submit
            assert not any(f.done() for f in early)
            late = second.submit([image(3.0), image(4.0)])
            async with asyncio.timeout(10):
                await asyncio.gather(*early, *late)
        together = recorder.sizes[len(alone) :]
        with batcher.reserve():
            pass  # a reservation that never submits (e.g. its upload failed to decode) releases its claim
        left = batcher.reserved
        await batcher.close()
        executor.shutdown()
        return alone, together, left

    alone, together, left = run(main())
    assert alone == [1]
    assert together == [3]
    assert left == 0


def test_fixed_wait_holds_a_partial_batch_for_max_delay() -> None:
    """Without the adaptive wait, a lone image waits ``max_delay_s`` for company: a later one joins it."""

    async def main() -> list[int]:
        batcher, recorder, executor = make(max_delay_s=0.5)
        batcher.start()
        first = batcher.submit([image(1.0)])
        await asyncio.sleep(0.05)
        second = batcher.submit([image(2.0)])
        await asyncio.gather(*first, *second)
        await batcher.close()
        executor.shutdown()
        return recorder.sizes

    assert run(main()) == [2]
