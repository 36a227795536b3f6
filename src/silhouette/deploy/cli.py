"""Commands of the edge-to-cloud split: obfuscate, export, serve, edge."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from silhouette.errors import SilhouetteError

DEFAULT_SIZE_TEXT = "320x200"


def _size(text: str) -> tuple[int, int]:
    from silhouette.data.sources import parse_size

    return parse_size(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _quality(text: str) -> int:
    value = _positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {value}")
    return value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="PATH", help="obfuscator checkpoint (.pt) or exported .onnx (default: the shipped one)")
    p.add_argument("--size", default=DEFAULT_SIZE_TEXT, metavar="WxH", help="model input size; frames are resized to it with INTER_AREA (default 320x200)")
    p.add_argument(
        "--backend", default="onnx", choices=["onnx", "onnx-int8", "torch"],
        help="runtime: onnx (ONNX Runtime fp32, exported once and cached; default), onnx-int8 (static int8) or torch",
    )
    p.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads for the obfuscator (default: runtime's choice)")
    p.add_argument("--every", type=_positive_int, default=1, metavar="N", help="keep every N-th frame of the input (default 1)")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames (useful for live sources)")


# options of `serve` whose default lives in ServiceConfig (validated there, one-line errors); None = not given
SERVE_LIMITS = (
    "max_pixels", "max_request_pixels", "max_decoded_pixels", "max_concurrency", "max_connections",
    "header_timeout", "body_timeout", "keep_alive", "idempotency_cache",
)


def _add_serve_limits(p: argparse.ArgumentParser) -> None:
    """The service's hardening limits: request and memory budgets, socket timeouts and caps, idempotency cache."""
    p.add_argument(
        "--max-request-pixels", type=int, metavar="N",
        help="pixels all images of one request may declare together, checked from their headers before decoding; more -> 413 (default 4 x --max-pixels = 67108864)",
    )
    p.add_argument(
        "--max-decoded-pixels", type=int, metavar="N",
        help="decoded pixels a worker holds at once over all requests; images wait their turn beyond it (default --max-pixels: one largest image at a time, ~0.7 GB with YOLOX-Nano at 4096x4096)",
    )
    p.add_argument("--max-concurrency", type=int, metavar="N", help="/v1 requests in progress per worker; more are answered 503 + Retry-After (default 32)")
    p.add_argument(
        "--max-connections", type=int, metavar="N",
        help="open client connections per worker; at the cap the longest-idle one is closed, or a new one refused when all are busy (default 1000, lowered to fit ulimit -n)",
    )
    p.add_argument("--header-timeout", type=float, metavar="S", help="seconds a client has to send the request line and headers, however slowly they trickle (default 10)")
    p.add_argument("--body-timeout", type=float, metavar="S", help="seconds a client has to send the whole body once the headers are in (default 30)")
    p.add_argument("--keep-alive", type=float, metavar="S", help="seconds an idle keep-alive connection stays open between requests (default 5)")
    p.add_argument(
        "--idempotency-cache", type=int, metavar="N",
        help="recent (camera_id, Idempotency-Key) answers kept per worker, so a retried frame is counted once (default 10000)",
    )


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse has no public type for it
    """Add the obfuscate, export, serve and edge commands."""
    p = sub.add_parser(
        "obfuscate", help="obfuscate an image, folder, video, webcam or stream on this machine (the camera side)",
        description="Resize frames to the model size and obfuscate them; writes images (folder or file) or a video, chosen by --out's suffix.",
    )
    p.add_argument("input", metavar="INPUT", help="image, image folder, video (avi, mp4, gif, ...), webcam index or rtsp/http URL")
    p.add_argument("--out", metavar="PATH", help="output: a .mp4/.avi/.mkv video, a .png/.jpg file (single image) or a folder (default: <name>_obfuscated)")
    p.add_argument("--format", default="png", choices=["png", "jpg"], help="image format when writing a folder (default png)")
    p.add_argument("--quality", type=_quality, default=95, metavar="Q", help="JPEG quality 1-100 (default 95)")
    p.add_argument("--codec", default="mp4v", metavar="FOURCC", help="video codec four-character code for OpenCV (default mp4v)")
    p.add_argument("--show-fps", action="store_true", help="print throughput (end to end and obfuscator only) at the end")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--batch", type=int, metavar="N",
        help="frames per obfuscator call (default 4 for files, folders and videos; 1 for webcams and streams, where latency matters)",
    )
    p.add_argument(
        "--max-pixels", type=_positive_int, metavar="N",
        help="refuse input images and video frames larger than N pixels, checked before decoding (default 16777216 = 4096x4096)",
    )
    p.add_argument(
        "--strict", action="store_true",
        help="fail (and write nothing) when a video ends before the frames its container promises (default: warn)",
    )
    _add_model_options(p)
    p.set_defaults(func=cmd_obfuscate)

    p = sub.add_parser(
        "export", help="export the obfuscator to ONNX (dynamic batch/H/W) and optionally int8",
        description="Exports to ONNX (validated with onnx.checker), checks parity against torch and, with --int8, "
        "writes a statically quantised model calibrated on PETS frames and reports its detection quality.",
    )
    p.add_argument("--checkpoint", metavar="PATH", help="obfuscator checkpoint (default: the shipped one)")
    p.add_argument("--out", required=True, metavar="PATH", help="output .onnx file; --int8 also writes <stem>.int8.onnx beside it")
    p.add_argument("--int8", action="store_true", help="also write a static int8 (QDQ) model calibrated on PETS-2009 frames")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13, default 17)")
    p.add_argument("--detector", default="yolox_nano", help="detector used to report int8 quality (default yolox_nano)")
    p.add_argument("--calib-frames", type=_positive_int, default=32, metavar="N", help="PETS frames for int8 calibration (default 32)")
    p.add_argument("--eval-frames", type=_positive_int, default=20, metavar="N", help="held-out PETS frames for the int8 quality report (default 20)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "serve", help="run the person-detection service (the cloud side)",
        description="FastAPI + uvicorn service: POST /v1/detect, /v1/detect/batch, GET /v1/counts/{camera_id}, /healthz, /metrics, /docs.",
    )
    p.add_argument("--detector", default="yolox_nano", help="detector name or ensemble spec (default yolox_nano)")
    p.add_argument("--pair", metavar="CKPT",
                   help="private mode: serve the co-trained detector saved beside this obfuscator checkpoint (checked by "
                        "sha256); only cameras running that obfuscator are answered, others get 409")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; put a TLS proxy in front for anything else)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=_positive_int, default=1, help="uvicorn worker processes, each with its own detector (default 1)")
    p.add_argument("--batch-size", type=_positive_int, default=1, metavar="B", help="max frames the detector runs at once across concurrent requests (default 1)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="MS", help="how long to wait to fill a batch (default 5 ms; only with --batch-size > 1)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--api-key-env", default="SILHOUETTE_API_KEY", metavar="VAR", help="environment variable holding the API key (default SILHOUETTE_API_KEY)")
    keys.add_argument("--api-key-file", metavar="FILE", help="file whose first line is the API key")
    keys.add_argument("--no-auth", action="store_true", help="accept requests without a key (loopback host only)")
    p.add_argument("--max-bytes", type=_positive_int, default=8 * 1024 * 1024, metavar="N", help="largest request body in bytes (default 8 MiB)")
    p.add_argument("--max-pixels", type=int, metavar="N", help="largest image in pixels, checked from its header before decoding (default 16777216 = 4096x4096)")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="ONNX Runtime threads per worker (default: all cores)")
    _add_serve_limits(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "edge", help="camera client: obfuscate locally and send only obfuscated frames to a service",
        description="Reads a source, obfuscates each frame on this machine and posts ONLY the obfuscated encoding; prints person counts and bandwidth.",
    )
    p.add_argument("--source", required=True, help="image, folder, video, webcam index or rtsp/http URL")
    p.add_argument("--pair", metavar="CKPT",
                   help="private mode: obfuscate with this pair's obfuscator and name the pair to the service, which "
                        "must run its detector (`serve --pair`); replaces --checkpoint")
    p.add_argument("--max-pixels", type=_positive_int, metavar="N",
                   help="largest input frame in pixels, checked before decoding (default 4096*4096)")
    p.add_argument("--server", required=True, metavar="URL", help="service base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key-file", metavar="FILE", help="file whose first line is the API key (default: $SILHOUETTE_API_KEY)")
    p.add_argument("--camera-id", metavar="ID", help="camera id for the service's rolling counts (default: derived from the source)")
    p.add_argument(
        "--format",
        default="png",
        choices=["png", "jpg"],
        help="encoding of the frames sent (default png: JPEG artefacts on obfuscated frames shift the cloud's counts)",
    )
    p.add_argument("--quality", type=_quality, default=90, metavar="Q", help="JPEG quality 1-100 (default 90)")
    p.add_argument(
        "--retries", type=int, metavar="N",
        help="at most N retries per frame when the server is unreachable, busy or times out (default: no count limit, see --retry-for)",
    )
    p.add_argument(
        "--retry-for", type=float, metavar="SECONDS",
        help="keep retrying a frame for this long before reporting it lost (default 30 s, enough for a server restart; "
        "no time limit when only --retries is given); the first limit reached ends the retries",
    )
    p.add_argument("--require-tls", action="store_true", help="refuse plain http:// to a host that is not loopback (default: warn when it would carry the API key)")
    p.add_argument("--backoff", type=float, default=0.25, metavar="S", help="first retry delay in seconds, doubled each retry (default 0.25)")
    p.add_argument("--max-backoff", type=float, default=4.0, metavar="S", help="cap on the retry delay (default 4 s)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="HTTP timeout per request (default 10 s)")
    p.add_argument("--report", metavar="JSON", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the summary, not one line per frame")
    _add_model_options(p)
    p.set_defaults(func=cmd_edge)


def cmd_obfuscate(args: argparse.Namespace) -> int:
    """Handler of `silhouette obfuscate`."""
    from silhouette.deploy.pipeline import check_batch, load_runner, obfuscate_source

    size = _size(args.size)
    if args.batch is not None:
        check_batch(args.batch, live=False)  # before loading/exporting the model
    if len(args.codec) != 4:
        raise SilhouetteError(f"--codec {args.codec!r}: expected a four-character code such as mp4v, XVID, MJPG")
    from silhouette.data.sources import open_source
    from silhouette.fileio import cleanup_on_sigterm

    # fail on a bad (or over --max-pixels) input before loading/exporting the model
    source = open_source(args.input, max_pixels=args.max_pixels, strict=args.strict)
    runner = load_runner(args.checkpoint, args.backend, args.threads)
    with cleanup_on_sigterm("obfuscate"):  # SIGTERM: no temporary or half-written output stays behind, exit 143
        report = obfuscate_source(
            source, runner, Path(args.out) if args.out else None, size=size, fmt=args.format, quality=args.quality,
            codec=args.codec, every=args.every, max_frames=args.max_frames,
            progress=not args.no_progress and sys.stderr.isatty(), batch=args.batch,
        )
    print(f"obfuscated {report.frames} frame(s) at {size[0]}x{size[1]} with {report.backend} -> {report.out}")
    if args.show_fps:
        print(f"throughput: {report.fps:.1f} frames/s end to end, {report.model_fps:.1f} frames/s obfuscator only")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Handler of `silhouette export`."""
    from silhouette.deploy.export import CALIB_RANGE, EVAL_RANGE, export_onnx, int8_quality, parity, pets_frames, quantize_int8
    from silhouette.deploy.pipeline import load_torch_obfuscator, resolve_checkpoint

    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise SilhouetteError(f"--out {out}: must end in .onnx")
    ckpt = resolve_checkpoint(args.checkpoint)
    model = load_torch_obfuscator(ckpt)
    export_onnx(model, out, opset=args.opset)
    diffs = parity(model, out)
    print(f"wrote {out} (opset {args.opset}, dynamic batch/height/width; onnx.checker passed)")
    print("fp32 parity vs torch, max abs diff: " + ", ".join(f"{k}: {v:.2e}" for k, v in diffs.items()))
    if args.int8:
        q = out.with_name(out.stem + ".int8.onnx")
        quantize_int8(out, q, pets_frames(*CALIB_RANGE, count=args.calib_frames))
        print(f"wrote {q} (static int8 QDQ, per-channel weights, {args.calib_frames} PETS calibration frames {CALIB_RANGE[0]}-{CALIB_RANGE[1] - 1})")
        qd = parity(model, q)
        print("int8 max abs diff vs torch: " + ", ".join(f"{k}: {v:.3f}" for k, v in qd.items()))
        res = int8_quality(model, q, args.detector, pets_frames(*EVAL_RANGE, count=args.eval_frames))
        print(
            f"int8 quality on {res['frames']} held-out PETS frames ({args.detector}): person AP50 {res['ap50_vs_torch']:.3f} "
            f"against detections on torch-obfuscated frames ({res['persons_torch']} vs {res['persons_int8']} persons), "
            f"mean abs pixel diff {res['mean_abs_diff']:.4f}"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Handler of `silhouette serve`."""
    from silhouette.deploy.service import ServiceConfig, serve

    if not 0 < args.port < 65536:
        raise SilhouetteError(f"--port {args.port}: must be between 1 and 65535")
    if args.pair and args.detector != "yolox_nano":
        raise SilhouetteError("--pair brings its own detector; drop --detector")
    given = {name: getattr(args, name) for name in SERVE_LIMITS if getattr(args, name) is not None}  # else ServiceConfig's defaults
    cfg = ServiceConfig(
        detector=args.detector, api_key_env=args.api_key_env, api_key_file=args.api_key_file, no_auth=args.no_auth,
        batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms, max_bytes=args.max_bytes, threads=args.threads,
        pair=args.pair, **given,
    )
    if args.pair:
        from silhouette.detectors.adapt import pair_detector

        pair_detector(args.pair)  # a broken or mismatched pair fails here in one line, not in each worker
    serve(cfg, host=args.host, port=args.port, workers=args.workers)  # a bad limit is a one-line SilhouetteError there
    return 0


def _edge_client(args: argparse.Namespace):  # noqa: ANN202 - an EdgeClient, imported lazily
    """The edge command's HTTP client; the URL and --require-tls checks run first, before a key, frame or model is touched."""
    import logging

    from silhouette.deploy.edge import EdgeClient, check_transport
    from silhouette.deploy.service import DEFAULT_API_KEY_ENV, load_api_key

    check_transport(args.server, sends_key=False, require_tls=args.require_tls)  # refuses; the warning comes from EdgeClient
    if args.timeout <= 0:
        raise SilhouetteError(f"--timeout {args.timeout}: must be > 0 seconds")
    key = None
    if args.api_key_file or os.environ.get(DEFAULT_API_KEY_ENV):
        key = load_api_key(DEFAULT_API_KEY_ENV, args.api_key_file)
    else:
        logging.getLogger("silhouette.edge").warning("no API key (--api-key-file or $%s); sending without one", DEFAULT_API_KEY_ENV)
    pair_id = _edge_pair(args)
    return EdgeClient(
        args.server, key, args.camera_id, args.timeout, args.retries, args.backoff, args.max_backoff,
        retry_for=args.retry_for, require_tls=args.require_tls, pair_id=pair_id,
    )


def _edge_pair(args: argparse.Namespace) -> str | None:
    """The pair id the camera names to the service (private mode), after checking --pair/--checkpoint agree."""
    from silhouette.detectors.adapt import pair_id_of

    if args.pair and args.checkpoint:
        raise SilhouetteError("--pair is the obfuscator checkpoint too; drop --checkpoint")
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is not None and ckpt.suffix == ".pt" and ckpt.is_file() and pair_id_of(ckpt):
        raise SilhouetteError(f"--checkpoint {args.checkpoint}: a private-mode obfuscator; pass it as --pair so the "
                              "service can check it runs the matching detector")
    if not args.pair:
        return None
    pair_id = pair_id_of(args.pair)
    if pair_id is None:
        raise SilhouetteError(f"--pair {args.pair}: not a private-mode checkpoint; pass it as --checkpoint instead")
    return pair_id


def _print_edge_summary(args: argparse.Namespace, summary: dict, size: tuple[int, int]) -> None:
    """One summary line: delivery, retries, persons and bandwidth."""
    s = summary
    ratio = s["bytes_per_frame_sent"] / s["bytes_per_frame_original"] if s["bytes_per_frame_original"] and s["sent"] else float("nan")
    print(
        f"summary: {s['frames']} frames, {s['sent']} delivered, {s['failed']} failed, {s['retries']} retries, "
        f"{s['people_total']} person detections; {args.format} q{args.quality}: {s['bytes_per_frame_sent'] / 1024:.1f} KiB/frame sent vs "
        f"{s['bytes_per_frame_original'] / 1024:.1f} KiB original ({s['bytes_per_frame_original_at_model_size'] / 1024:.1f} KiB at {size[0]}x{size[1]}), "
        f"ratio {ratio:.2f}; {s['fps']:.1f} frames/s"
    )


def cmd_edge(args: argparse.Namespace) -> int:
    """Handler of `silhouette edge`."""
    from silhouette.data.sources import open_source, sample_frames
    from silhouette.deploy.edge import run_edge
    from silhouette.deploy.pipeline import EdgeObfuscator, load_runner
    from silhouette.fileio import write_json

    size = _size(args.size)
    client = _edge_client(args)
    try:
        source = open_source(args.source, max_pixels=args.max_pixels)
        client.set_camera(args.camera_id or source.name[:64])  # a derived name is already safe_name()d; the service takes 64 chars
        edge = EdgeObfuscator(load_runner(args.pair or args.checkpoint, args.backend, args.threads), size)

        def frames():  # noqa: ANN202
            for i, frame in enumerate(sample_frames(iter(source), every=args.every)):
                if args.max_frames is not None and i >= args.max_frames:
                    return
                yield frame.index, frame.image

        def show(index: int, result: dict | None, stats) -> None:  # noqa: ANN001
            if args.quiet:
                return
            if result is None:
                print(f"frame {index}: FAILED (not delivered)", flush=True)
            else:
                print(f"frame {index}: {result['count']} person(s)", flush=True)

        stats = run_edge(frames(), edge, client, args.format, args.quality, size, on_result=show)
    finally:
        client.close()
    s = stats.summary()
    _print_edge_summary(args, s, size)
    if args.report:
        write_json(args.report, {**s, "camera_id": client.camera_id, "server": args.server, "format": args.format, "quality": args.quality})
    return 0 if s["failed"] == 0 else 1
