"""Detector batching: concurrent requests share detector calls of up to --batch-size frames of one size."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import numpy as np


class Batcher:
    """Collects concurrent requests into detector batches of up to `batch_size` frames of the same size."""

    def __init__(self, predict: Callable[[list[np.ndarray]], list[Any]], batch_size: int, wait_s: float, on_batch: Callable[[int], None]) -> None:
        self.predict = predict
        self.batch_size = max(1, int(batch_size))
        self.wait_s = max(0.0, wait_s)
        self.on_batch = on_batch
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[Any]]] | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, image: np.ndarray) -> Any:
        """Detections for one HxWx3 uint8 BGR frame."""
        assert self.queue is not None, "Batcher.start() was not awaited"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((image, fut))
        return await fut

    async def _loop(self) -> None:
        while True:
            items = await self._collect()
            await self._run(items)
            del items  # no frame stays referenced while the loop waits for the next request

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future[Any]]]:
        """The next batch: the first queued frame plus whatever arrives within wait_s, up to batch_size."""
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.wait_s
        while len(items) < self.batch_size:
            try:
                items.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return items

    async def _run(self, items: list[tuple[np.ndarray, asyncio.Future[Any]]]) -> None:
        """Run the detector once per frame size and hand each result (or the error) to its request."""
        from starlette.concurrency import run_in_threadpool

        groups: dict[tuple[int, ...], list[tuple[np.ndarray, asyncio.Future[Any]]]] = {}
        for item in items:
            groups.setdefault(item[0].shape, []).append(item)
        for group in groups.values():
            try:
                self.on_batch(len(group))
                results = await run_in_threadpool(self.predict, [im for im, _ in group])
            except Exception as exc:  # handed to every waiting request; the loop keeps serving
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), res in zip(group, results):
                if not fut.done():
                    fut.set_result(res)


def predictor(detector: Any) -> Callable[[list[np.ndarray]], list[Any]]:
    """The batcher's detector call: HxWx3 uint8 BGR frames of one size -> person detections per frame."""
    import torch

    from silhouette.imaging import bgr_batch_to_tensor

    def predict(images: list[np.ndarray]) -> list[Any]:
        batch = bgr_batch_to_tensor(images)
        with torch.inference_mode():
            return [d.persons() for d in detector.predict(batch)]

    return predict
