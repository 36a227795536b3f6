"""The work behind both detect endpoints: uploads read in memory, pixel budgets, one image decoded after another, stored once."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, Request
from fastapi.responses import Response

from silhouette.imaging import ImageError, decode_frame, probe_frame
from silhouette.serve.batching import Batcher
from silhouette.serve.idempotency import IdempotencyCache, check_idempotency_key, fingerprint
from silhouette.serve.limits import AppLimits, PixelBudget
from silhouette.serve.metrics import Metrics
from silhouette.serve.recording import Found, Meta, Recorder, found_from, read_meta, stored_answers
from silhouette.serve.schemas import DetectResult
from silhouette.serve.uploads import TooManyFiles, read_multipart_files
from silhouette.wire import CAMERA_ID_RE, DETECT_PATH, IDEMPOTENCY_HEADER, REPLAYED_HEADER


def check_camera(camera_id: str | None) -> str | None:
    """The camera id, or HTTP 422 for one that is not 1-64 safe characters."""
    if camera_id is not None and not CAMERA_ID_RE.match(camera_id):
        raise HTTPException(422, "camera_id must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return camera_id


class Detection:
    """The work behind both detect endpoints: uploads read in memory, pixel budgets, one image decoded after another,
    every result stored, a repeated key answered from the store."""

    def __init__(self, name: str, batcher: Batcher, metrics: Metrics, recorder: Recorder, limits: AppLimits) -> None:
        self.name = name
        self.batcher = batcher  # the detector seam: anything with `batch_size` and `await submit(frame)`
        self.metrics = metrics
        self.recorder = recorder
        self.limits = limits
        self.budget = PixelBudget(limits.max_decoded_pixels)
        self.replies = IdempotencyCache(limits.idempotency_cache)
        metrics.decoded_pixels.set_function(lambda: self.budget.used)

    async def answer(self, request: Request, response: Response, camera_id: str | None, endpoint: str) -> list[DetectResult]:
        """Results of one request (ids and headers checked before the body is read); a replay is marked in a header."""
        camera_id = check_camera(camera_id)
        key = check_idempotency_key(request.headers.getlist(IDEMPOTENCY_HEADER))
        meta = read_meta(request, camera_id, key, endpoint)
        uploads = await self._uploads(request, single=endpoint == DETECT_PATH)
        digest = fingerprint(endpoint, uploads)
        sha = digest.hex()
        if key is None:
            return (await self._count(meta, uploads, sha))[0]
        # fast path in this worker: concurrent repeats wait for the first; its answer came from the store, so the
        # cache cannot disagree with what another worker (which asks the store) answers
        slot = (meta.camera, key)
        reply, first = self.replies.claim(slot, digest)
        if not first:
            self._replayed(response)
            return await reply.wait()  # the first request's answer, also when it is still in progress
        try:
            results, replayed = await self._once(meta, uploads, sha)
        except HTTPException as exc:
            self.replies.finish(slot, reply, error=exc)
            raise
        except BaseException:
            self.replies.finish(slot, reply, error=HTTPException(503, f"an earlier request with this {IDEMPOTENCY_HEADER} failed; retry"))
            raise
        self.replies.finish(slot, reply, result=results)
        if replayed:
            self._replayed(response)
        return results

    def _replayed(self, response: Response) -> None:
        """Mark an answer replayed from the first request with the same key."""
        self.metrics.replays.inc()
        response.headers[REPLAYED_HEADER] = "true"

    async def _once(self, meta: Meta, uploads: list[bytes], sha: str) -> tuple[list[DetectResult], bool]:
        """The stored answer of a key seen before (by any worker, before a restart too), else the new one."""
        from starlette.concurrency import run_in_threadpool

        stored = await run_in_threadpool(self.recorder.lookup, meta, sha, len(uploads))
        if stored is None:
            return await self._count(meta, uploads, sha)
        sizes = await run_in_threadpool(self._probe, uploads, meta.endpoint)  # the same images: headers give the sizes
        return stored_answers(stored, sizes, meta), True

    async def _uploads(self, request: Request, single: bool) -> list[bytes]:
        """The uploaded images: multipart file parts (in memory) or, for /v1/detect, the raw body."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            limit = 1 if single else self.limits.max_batch_images
            try:
                files = await read_multipart_files(request, limit)
            except TooManyFiles:
                if single:
                    raise HTTPException(400, "send exactly one image to /v1/detect; use /v1/detect/batch for several") from None
                raise HTTPException(413, f"more than {limit} images in one request; the limit is {limit}") from None
            if not files:
                raise HTTPException(400, "multipart request holds no file field; send the image as field 'file'")
            return files
        if not single:
            raise HTTPException(400, "send the images as multipart/form-data fields named 'files'")
        return [await request.body()]

    async def _count(self, meta: Meta, uploads: list[bytes], sha: str) -> tuple[list[DetectResult], bool]:
        """Detections for each upload, in order, stored only when every image of the request succeeded."""
        from starlette.concurrency import run_in_threadpool

        sizes = await run_in_threadpool(self._probe, uploads, meta.endpoint)
        found = await self._run_images(uploads, [w * h for w, h in sizes], meta.endpoint)
        for f in found:
            self.metrics.images.inc()
            self.metrics.people.inc(len(f.boxes))
        rows, replayed = await run_in_threadpool(self.recorder.save, meta, sha, found)
        if not replayed:
            self.recorder.keep_frame(meta, uploads[-1], found[-1])
        return stored_answers(rows, sizes, meta), replayed

    def _probe(self, uploads: list[bytes], endpoint: str) -> list[tuple[int, int]]:
        """(width, height) of each upload, from headers alone; 400/413/415/422 before any pixel of the request is decoded."""
        sizes = []
        for i, data in enumerate(uploads):
            try:
                sizes.append(probe_frame(data, self.limits.max_pixels))
            except ImageError as exc:
                raise self._image_error(exc, i, endpoint) from None
        total = sum(w * h for w, h in sizes)
        if total > self.limits.max_request_pixels:
            self.metrics.errors.labels(endpoint, "too_many_pixels").inc()
            raise HTTPException(
                413, f"the {len(uploads)} images of this request declare {total} pixels in total, more than the per-request "
                f"limit of {self.limits.max_request_pixels} (--max-request-pixels); send fewer or smaller images",
            )
        return sizes

    def _image_error(self, exc: ImageError, index: int, endpoint: str) -> HTTPException:
        self.metrics.errors.labels(endpoint, f"bad_image_{exc.status}").inc()
        return HTTPException(exc.status, exc.message if endpoint == DETECT_PATH else f"image {index}: {exc.message}")

    async def _run_images(self, uploads: list[bytes], pixels: list[int], endpoint: str) -> list[Found]:
        """Decode -> detector queue, image after image: at most batch_size images of one request wait for the detector."""
        tasks: list[asyncio.Future[Found]] = []
        try:
            for i, (data, px) in enumerate(zip(uploads, pixels)):
                running = [t for t in tasks if not t.done()]
                if len(running) >= self.batcher.batch_size:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for t in tasks:
                    if t.done():
                        t.result()  # an image already failed: stop decoding the rest
                tasks.append(asyncio.ensure_future(self._detect_one(data, px, i, endpoint)))
            return list(await asyncio.gather(*tasks))
        finally:
            # after an error the images already queued finish first: their pixels leave the budget with their memory
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _detect_one(self, data: bytes, pixels: int, index: int, endpoint: str) -> Found:
        """Decode one image inside the decoded-pixel budget and run it through the detector batcher."""
        from starlette.concurrency import run_in_threadpool

        await self.budget.acquire(pixels)
        try:
            try:
                frame = await run_in_threadpool(decode_frame, data, self.limits.max_pixels)
            except ImageError as exc:
                raise self._image_error(exc, index, endpoint) from None
            height, width = frame.shape[:2]
            dets = await self.batcher.submit(frame)
            del frame
        finally:
            self.budget.release(pixels)
        return found_from(dets, width, height)
