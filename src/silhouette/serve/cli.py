"""The cloud's command: `silhouette serve` (FastAPI and the detector are imported only when it runs)."""

from __future__ import annotations

import argparse

from silhouette.cli import non_negative_int, positive_int
from silhouette.errors import SilhouetteError
from silhouette.serve.backends import add_backend_arguments
from silhouette.serve.config import DEFAULT_DB_FILE, DEFAULT_KEEP_DAYS
from silhouette.wire import DEFAULT_API_KEY_ENV

# the service's hardening limits: request and memory budgets, socket timeouts and caps, idempotency cache
LIMIT_OPTIONS = (
    ("--max-request-pixels", int, "N", "pixels all images of one request may declare together, checked from their "
     "headers before decoding; more -> 413 (default 4 x --max-pixels = 67108864)"),
    ("--max-decoded-pixels", int, "N", "decoded pixels a worker holds at once over all requests; images wait their turn "
     "beyond it (default --max-pixels: one largest image at a time, ~0.7 GB with YOLOX-Nano at 4096x4096)"),
    ("--max-concurrency", int, "N", "/v1 requests in progress per worker; more are answered 503 + Retry-After (default 32)"),
    ("--max-connections", int, "N", "open client connections per worker; at the cap the longest-idle one is closed, or a "
     "new one refused when all are busy (default 1000, lowered to fit ulimit -n)"),
    ("--header-timeout", float, "S", "seconds a client has to send the request line and headers, however slowly they "
     "trickle (default 10)"),
    ("--body-timeout", float, "S", "seconds a client has to send the whole body once the headers are in (default 30)"),
    ("--keep-alive", float, "S", "seconds an idle keep-alive connection stays open between requests (default 5)"),
    ("--idempotency-cache", int, "N", "recent (camera_id, Idempotency-Key) answers kept per worker, so a retried frame "
     "is counted once (default 10000)"),
)


# options of `serve` whose default lives in ServiceConfig (validated there, one-line errors); None = not given
SERVE_LIMITS = ("max_pixels", *(flag[2:].replace("-", "_") for flag, *_ in LIMIT_OPTIONS))


def _add_limits(p: argparse.ArgumentParser) -> None:
    """Add the limit options (no argparse defaults: ServiceConfig's apply when one is not given)."""
    for flag, kind, metavar, text in LIMIT_OPTIONS:
        p.add_argument(flag, type=kind, metavar=metavar, help=text)


def _add_storage(p: argparse.ArgumentParser) -> None:
    """Where counts are stored and for how long."""
    p.add_argument(
        "--db", metavar="URL",
        help=f"SQLAlchemy URL of the count database, shared by all workers and kept across restarts: a SQLite file "
             f"(sqlite:////var/lib/silhouette/counts.db) or PostgreSQL (postgresql://user@host:5432/silhouette; keep the "
             f"password in ~/.pgpass or $PGPASSWORD, not on the command line) (default: sqlite:///./{DEFAULT_DB_FILE}, "
             f"a SQLite file in the working directory; the URL in use is printed at start-up)",
    )
    p.add_argument(
        "--keep-days", type=non_negative_int, default=DEFAULT_KEEP_DAYS, metavar="N",
        help=f"delete stored detections older than N days, at start-up and hourly; 0 keeps them forever (default {DEFAULT_KEEP_DAYS})",
    )


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse has no public type for it
    """Add the serve command."""
    p = sub.add_parser(
        "serve", help="run the person-detection service (the cloud side)",
        description="FastAPI + uvicorn service: POST /v1/detect, /v1/detect/batch, GET /v1/cameras, /v1/counts/{camera_id}[.csv], "
                    "/healthz, /metrics, /docs, and the dashboard at / (login with the API key). Every result is stored in --db.",
    )
    p.add_argument("--detector", default="yolox_nano", help="detector name or ensemble spec (default yolox_nano)")
    p.add_argument("--pair", metavar="CKPT",
                   help="private mode: serve the co-trained detector saved beside this obfuscator checkpoint (checked by "
                        "sha256); only cameras running that obfuscator are answered, others get 409")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; put a TLS proxy in front for anything else)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=positive_int, default=1, help="uvicorn worker processes, each with its own detector (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="B", help="max frames the detector runs at once across concurrent requests (default 1)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="MS", help="how long to wait to fill a batch (default 5 ms; only with --batch-size > 1)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV, metavar="VAR", help=f"environment variable holding the API key (default {DEFAULT_API_KEY_ENV})")
    keys.add_argument("--api-key-file", metavar="FILE", help="file whose first line is the API key")
    keys.add_argument("--no-auth", action="store_true", help="accept requests without a key (loopback host only)")
    p.add_argument("--max-bytes", type=positive_int, default=8 * 1024 * 1024, metavar="N", help="largest request body in bytes (default 8 MiB)")
    p.add_argument("--max-pixels", type=int, metavar="N", help="largest image in pixels, checked from its header before decoding (default 16777216 = 4096x4096)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="threads per worker for ONNX Runtime, torch and OpenCV, or per replica with --backend ray (default: all cores; ray: 1)")
    add_backend_arguments(p)
    _add_storage(p)
    _add_limits(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Handler of `silhouette serve`."""
    from silhouette.serve.config import ServiceConfig
    from silhouette.serve.server import serve

    if not 0 < args.port < 65536:
        raise SilhouetteError(f"--port {args.port}: must be between 1 and 65535")
    if args.pair and args.detector != "yolox_nano":
        raise SilhouetteError("--pair brings its own detector; drop --detector")
    given = {name: getattr(args, name) for name in SERVE_LIMITS if getattr(args, name) is not None}  # else ServiceConfig's defaults
    cfg = ServiceConfig(
        detector=args.detector, api_key_env=args.api_key_env, api_key_file=args.api_key_file, no_auth=args.no_auth,
        batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms, max_bytes=args.max_bytes, threads=args.threads,
        pair=args.pair, db=args.db, keep_days=args.keep_days, backend=args.backend, replicas=args.replicas,
        ray_address=args.ray_address, **given,
    )
    if args.pair:
        from silhouette.detectors.adapt import pair_detector

        pair_detector(args.pair)  # a broken or mismatched pair fails here in one line, not in each worker
    serve(cfg, host=args.host, port=args.port, workers=args.workers)  # a bad limit is a one-line SilhouetteError there
    return 0
