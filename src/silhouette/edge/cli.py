"""The camera's commands: obfuscate, export, edge (none of them imports torch unless a .pt model or --backend torch asks)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from typing import TYPE_CHECKING, Any

from silhouette.cli import positive_int
from silhouette.edge.spool import DEFAULT_SPOOL_MB
from silhouette.errors import SilhouetteError

if TYPE_CHECKING:
    from silhouette.edge.client import EdgeClient
    from silhouette.edge.fleet import Camera, CameraSpec

DEFAULT_SIZE_TEXT = "320x200"


def _size(text: str) -> tuple[int, int]:
    """argparse type: WxH."""
    from silhouette.data.sources import parse_size

    return parse_size(text)


def _quality(text: str) -> int:
    """argparse type: a JPEG quality 1-100."""
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {value}")
    return value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that runs the obfuscator on frames."""
    p.add_argument("--checkpoint", metavar="PATH", help="obfuscator: an .onnx, or a .pt checkpoint (needs torch) (default: the shipped obfuscator_default.onnx)")
    p.add_argument("--size", default=DEFAULT_SIZE_TEXT, metavar="WxH", help="model input size; frames are resized to it with INTER_AREA (default 320x200)")
    p.add_argument(
        "--backend", default="onnx", choices=["onnx", "onnx-int8", "torch"],
        help="runtime: onnx (ONNX Runtime fp32, exported once and cached; default), onnx-int8 (static int8) or torch",
    )
    p.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for the obfuscator (default: runtime's choice)")
    p.add_argument("--every", type=positive_int, default=1, metavar="N", help="keep every N-th frame of the input (default 1)")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames (useful for live sources)")


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse has no public type for it
    """Add the obfuscate, export and edge commands."""
    _add_obfuscate(sub)
    _add_export(sub)
    _add_edge(sub)


def _add_obfuscate(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """`silhouette obfuscate`: the camera side on files, folders, videos and live sources."""
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
        "--max-pixels", type=positive_int, metavar="N",
        help="refuse input images and video frames larger than N pixels, checked before decoding (default 16777216 = 4096x4096)",
    )
    p.add_argument(
        "--strict", action="store_true",
        help="fail (and write nothing) when a video ends before the frames its container promises (default: warn)",
    )
    _add_model_options(p)
    p.set_defaults(func=cmd_obfuscate)


def _add_export(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """`silhouette export`: ONNX (and int8) files of a .pt checkpoint."""
    p = sub.add_parser(
        "export", help="export the obfuscator to ONNX (dynamic batch/H/W) and optionally int8",
        description="Exports to ONNX (validated with onnx.checker), checks parity against torch and, with --int8, "
        "writes a statically quantised model calibrated on PETS frames and reports its detection quality.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="PATH", help="obfuscator checkpoint (default: the shipped one)")
    src.add_argument("--baseline", metavar="METHOD:PARAM",
                     help="a pointwise baseline instead, fold:K or quantize:LEVELS (fold:1 is the zero-MAC map), as an ONNX file that "
                          "`obfuscate` and `edge` run with --checkpoint like any obfuscator")
    p.add_argument("--out", required=True, metavar="PATH", help="output .onnx file; --int8 also writes <stem>.int8.onnx beside it")
    p.add_argument("--int8", action="store_true", help="also write a static int8 (QDQ) model calibrated on PETS-2009 frames")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13, default 17)")
    p.add_argument("--detector", default="yolox_nano", help="detector used to report int8 quality (default yolox_nano)")
    p.add_argument("--calib-frames", type=positive_int, default=32, metavar="N", help="PETS frames for int8 calibration (default 32)")
    p.add_argument("--eval-frames", type=positive_int, default=20, metavar="N", help="held-out PETS frames for the int8 quality report (default 20)")
    p.set_defaults(func=cmd_export)


EDGE_DESCRIPTION = """\
Reads one or more sources, obfuscates each frame on this machine and posts ONLY the obfuscated encoding; prints
person counts and bandwidth, one summary line per camera and a total.

Several cameras in one process: repeat --source, with one --camera-id per --source in the same order
(  --source rtsp://a/stream --camera-id gate-1 --source 0 --camera-id lobby  ), or list them in a YAML file:
  --fleet fleet.yaml     cameras:
                           - {camera_id: gate-1, source: "rtsp://a/stream", every: 2}
                           - {camera_id: lobby, source: 0, max_fps: 1}
(per camera: camera_id and source, optional every, max_frames, max_fps; the other options apply to all).
Each camera runs in its own threads and its frames reach the service in capture order.

While the service is unreachable (refused, reset, timed out, 5xx), frames go to a spool on disk, one folder per
camera (created 0700) holding only obfuscated encodings and their headers; when the service answers again the
spool is sent oldest first, and new frames queue behind it. A restarted client sends what an earlier run spooled.
"""


def _add_edge(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """`silhouette edge`: obfuscate locally and send to a service."""
    p = sub.add_parser(
        "edge", help="camera client: obfuscate locally and send only obfuscated frames to a service",
        description=EDGE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", action="append", metavar="SRC",
                   help="image, folder, video, webcam index or rtsp/http URL; repeat for several cameras")
    p.add_argument("--camera-id", action="append", metavar="ID",
                   help="camera id for the service's counts, one per --source in the same order (default: derived from each source)")
    p.add_argument("--fleet", metavar="YAML", help="cameras from a file instead of --source/--camera-id (see above)")
    p.add_argument("--max-fps", type=float, metavar="N",
                   help="at most N frames per second per camera: a file is read at that pace, a live source skips frames")
    p.add_argument("--pair", metavar="CKPT",
                   help="private mode: obfuscate with this pair's obfuscator and name the pair to the service, which "
                        "must run its detector (`serve --pair`); replaces --checkpoint")
    p.add_argument("--max-pixels", type=positive_int, metavar="N",
                   help="largest input frame in pixels, checked before decoding (default 4096*4096)")
    p.add_argument("--server", required=True, metavar="URL", help="service base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key-file", metavar="FILE", help="file whose first line is the API key (default: $SILHOUETTE_API_KEY)")
    p.add_argument(
        "--format",
        default="png",
        choices=["png", "jpg"],
        help="encoding of the frames sent (default png: JPEG artefacts on obfuscated frames shift the cloud's counts)",
    )
    p.add_argument("--quality", type=_quality, default=90, metavar="Q", help="JPEG quality 1-100 (default 90)")
    _add_edge_delivery(p)
    p.add_argument("--require-tls", action="store_true", help="refuse plain http:// to a host that is not loopback (default: warn when it would carry the API key)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="HTTP timeout per request (default 10 s)")
    p.add_argument("--report", metavar="JSON", help="also write the summary (total and per camera) as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the summary, not one line per frame")
    _add_model_options(p)
    p.set_defaults(func=cmd_edge)


def _add_edge_delivery(p: argparse.ArgumentParser) -> None:
    """The edge command's spool and retry options."""
    p.add_argument("--spool", metavar="DIR",
                   help="spool folder; each camera uses DIR/<camera id> (default: $SILHOUETTE_CACHE/spool, "
                        "else ~/.cache/silhouette/spool)")
    p.add_argument("--spool-max-mb", type=float, default=DEFAULT_SPOOL_MB, metavar="MB",
                   help=f"spool size per camera; when full the oldest frames are dropped and counted as lost (default {DEFAULT_SPOOL_MB:g})")
    p.add_argument("--no-spool", action="store_true",
                   help="no spool: a frame is retried in memory (--retries/--retry-for), then counted as failed")
    p.add_argument(
        "--retries", type=int, metavar="N",
        help="with --no-spool: at most N retries per frame (default: no count limit, see --retry-for)",
    )
    p.add_argument(
        "--retry-for", type=float, metavar="SECONDS",
        help="with the spool: how long to wait at the end of the input for an unreachable service before leaving the "
             "spooled frames to the next run; with --no-spool: how long a frame is retried before it counts as failed "
             "(default 30 s)",
    )
    p.add_argument("--backoff", type=float, default=0.25, metavar="S", help="first retry delay in seconds, doubled each retry (default 0.25)")
    p.add_argument("--max-backoff", type=float, default=4.0, metavar="S", help="cap on the retry delay (default 4 s)")


def cmd_obfuscate(args: argparse.Namespace) -> int:
    """Handler of `silhouette obfuscate`."""
    from silhouette.edge.pipeline import check_batch, obfuscate_source
    from silhouette.edge.runtime import load_runner

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


EXPORTABLE_BASELINES = ("fold", "quantize")


def _export_model(args: argparse.Namespace) -> Any:
    """The torch module `export` writes: a checkpoint's obfuscator, or a parameter-free classic baseline."""
    from silhouette.edge.checkpoint import load_torch_obfuscator, resolve_checkpoint

    if args.baseline is None:
        return load_torch_obfuscator(resolve_checkpoint(args.checkpoint))
    if args.int8:
        raise SilhouetteError(f"--baseline {args.baseline}: has no weights to quantise; drop --int8")
    from silhouette.evaluation.baselines import BaselineModule

    model = BaselineModule(args.baseline)
    if model.base.name not in EXPORTABLE_BASELINES:  # pooling to a size that depends on H and W does not trace dynamic
        raise SilhouetteError(f"--baseline {args.baseline}: only the pointwise maps ({', '.join(EXPORTABLE_BASELINES)}) "
                              "export to one ONNX graph for every frame size; choose one of them")
    return model.eval()


def cmd_export(args: argparse.Namespace) -> int:
    """Handler of `silhouette export`."""
    from silhouette.edge.checkpoint import require_torch
    from silhouette.edge.export import CALIB_RANGE, EVAL_RANGE, export_onnx, int8_quality, parity, pets_frames, quantize_int8

    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise SilhouetteError(f"--out {out}: must end in .onnx")
    require_torch("exporting a .pt checkpoint")
    model = _export_model(args)
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


def _edge_client(args: argparse.Namespace) -> EdgeClient:
    """The edge command's HTTP client; the URL and --require-tls checks run first, before a key, frame or model is touched."""
    import logging

    from silhouette.edge.client import EdgeClient, check_transport
    from silhouette.wire import DEFAULT_API_KEY_ENV, load_api_key

    check_transport(args.server, sends_key=False, require_tls=args.require_tls)  # refuses; the warning comes from EdgeClient
    if args.timeout <= 0:
        raise SilhouetteError(f"--timeout {args.timeout}: must be > 0 seconds")
    key = None
    if args.api_key_file or os.environ.get(DEFAULT_API_KEY_ENV):
        key = load_api_key(DEFAULT_API_KEY_ENV, args.api_key_file)
    else:
        logging.getLogger("silhouette.edge").warning("no API key (--api-key-file or $%s); sending without one", DEFAULT_API_KEY_ENV)
    pair_id = _edge_pair(args)
    if args.retries is not None and not args.no_spool:
        raise SilhouetteError("--retries counts tries of a frame kept in memory: it needs --no-spool (with the spool, "
                              "a frame that fails goes to disk and is retried until the service takes it)")
    return EdgeClient(
        args.server, key, None, args.timeout, args.retries, args.backoff, args.max_backoff,
        retry_for=args.retry_for, require_tls=args.require_tls, pair_id=pair_id,
    )


def _edge_pair(args: argparse.Namespace) -> str | None:
    """The pair id the camera names to the service (private mode), after checking --pair/--checkpoint agree."""
    from silhouette.edge.checkpoint import pair_id

    if args.pair and args.checkpoint:
        raise SilhouetteError("--pair is the obfuscator checkpoint too; drop --checkpoint")
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is not None and ckpt.suffix == ".pt" and ckpt.is_file() and pair_id(ckpt, "--checkpoint"):
        raise SilhouetteError(f"--checkpoint {args.checkpoint}: a private-mode obfuscator; pass it as --pair so the "
                              "service can check it runs the matching detector")
    if not args.pair:
        return None
    found = pair_id(args.pair)
    if found is None:
        raise SilhouetteError(f"--pair {args.pair}: not a private-mode checkpoint; pass it as --checkpoint instead")
    return found


def _edge_specs(args: argparse.Namespace) -> list[CameraSpec]:
    """The cameras to run, from --fleet or repeated --source/--camera-id; one-line errors before anything starts."""
    from silhouette.edge.fleet import load_fleet, specs_from_options

    if args.max_fps is not None and not args.max_fps > 0:
        raise SilhouetteError(f"--max-fps {args.max_fps}: must be > 0")
    if args.spool_max_mb is not None and not args.spool_max_mb > 0:
        raise SilhouetteError(f"--spool-max-mb {args.spool_max_mb}: must be > 0")
    if args.fleet:
        if args.source or args.camera_id:
            raise SilhouetteError("--fleet lists the cameras: drop --source and --camera-id")
        return load_fleet(args.fleet)
    if not args.source:
        raise SilhouetteError("give --source SRC (repeat it for several cameras) or --fleet FILE")
    return specs_from_options(args.source, args.camera_id, args.every, args.max_frames, args.max_fps)


def _edge_cameras(args: argparse.Namespace, specs: list[CameraSpec], size: tuple[int, int]) -> list[Camera]:
    """Open every source (then name unnamed cameras after them), every spool, and one obfuscator they all share."""
    from silhouette.data.sources import open_source
    from silhouette.edge.checkpoint import cache_root
    from silhouette.edge.fleet import Camera, check_camera_id, check_unique
    from silhouette.edge.pipeline import EdgeObfuscator
    from silhouette.edge.runtime import load_runner
    from silhouette.edge.spool import Spool

    sources = [open_source(spec.source, max_pixels=args.max_pixels) for spec in specs]  # all, before a model or spool
    for spec, src in zip(specs, sources):
        # a derived name is already safe_name()d; the service takes 64 characters
        spec.camera_id = spec.camera_id or check_camera_id(src.name[:64], f"{spec.source}: derived camera id")
    check_unique([(spec.camera_id, spec.source) for spec in specs])  # type: ignore[misc]
    root = Path(args.spool).expanduser() if args.spool else cache_root() / "spool"
    spools: list[Any] = []
    try:
        for spec in specs:
            spools.append(None if args.no_spool else Spool(root / str(spec.camera_id), int(args.spool_max_mb * 2**20), str(spec.camera_id)))
        runner = load_runner(args.pair or args.checkpoint, args.backend, args.threads)  # one for all: see fleet.py
        # ... except a silhouette runner, which holds one camera's background: each camera gets its own
        more = (load_runner(args.pair, args.backend) if runner.backend == "bgsub" else runner for _ in specs[1:])
        runners = [runner, *more]
        return [Camera(spec, src, spool, EdgeObfuscator(r, size)) for spec, src, spool, r in zip(specs, sources, spools, runners)]
    except BaseException:
        for spool in spools:
            if spool is not None:
                spool.close()
        raise


def _edge_line(label: str, s: dict, args: argparse.Namespace, size: tuple[int, int]) -> str:
    """One summary line: delivery, spool, retries, persons and bandwidth."""
    ratio = s["bytes_per_frame_sent"] / s["bytes_per_frame_original"] if s["bytes_per_frame_original"] and s["sent"] else float("nan")
    line = (
        f"{label}: {s['frames']} frames, {s['sent']} delivered, {s['failed']} failed, {s['spooled']} spooled, "
        f"{s['lost']} lost, {s['left']} left in the spool, {s['retries']} retries, {s['people_total']} person detections; "
        f"{args.format} q{args.quality}: {s['bytes_per_frame_sent'] / 1024:.1f} KiB/frame sent vs "
        f"{s['bytes_per_frame_original'] / 1024:.1f} KiB original ({s['bytes_per_frame_original_at_model_size'] / 1024:.1f} KiB at {size[0]}x{size[1]}), "
        f"ratio {ratio:.2f}; {s['fps']:.1f} frames/s"
    )
    if s["carried"]:
        line += f"; {s['carried']} frame(s) from an earlier run's spool, {s['replayed']} of them delivered"
    if s["error"]:
        line += f"; source stopped: {s['error']}"
    return line


def _edge_report(args: argparse.Namespace, cameras: list[Camera], client: EdgeClient, size: tuple[int, int]) -> int:
    """Print one line per camera and the total, write --report; exit status 0 only if every frame was delivered."""
    from silhouette.edge.fleet import total
    from silhouette.fileio import write_json

    stats = [cam.stats for cam in cameras]
    everything = total(stats)
    for s in stats:
        print(_edge_line(f"camera {s.camera_id}", s.summary(), args, size))
    print(_edge_line("summary", everything.summary(), args, size), flush=True)
    if args.report:
        report = {**everything.summary(), "cameras": {s.camera_id: s.summary() for s in stats}, "server": args.server,
                  "format": args.format, "quality": args.quality, "run_id": client.run_id}
        if len(stats) == 1:
            report["camera_id"] = stats[0].camera_id
        write_json(args.report, report)
    return 0 if all(s.complete for s in stats) else 1


def cmd_edge(args: argparse.Namespace) -> int:
    """Handler of `silhouette edge`."""
    import threading

    from silhouette.edge.client import DEFAULT_RETRY_FOR
    from silhouette.edge.fleet import Fleet, SendConfig
    from silhouette.edge.runtime import obfuscator_id
    from silhouette.fileio import Terminated, cleanup_on_sigterm

    size = _size(args.size)
    specs = _edge_specs(args)
    client = _edge_client(args)
    printing = threading.Lock()

    def show(camera_id: str, index: int, result: dict | None, replayed: bool) -> None:
        """One line per answered frame (from the sender threads, so printed under a lock)."""
        if args.quiet:
            return
        what = f"{camera_id} frame {index}" + (" (spooled by an earlier run)" if replayed else "")
        with printing:
            print(f"{what}: {'FAILED (not delivered)' if result is None else str(result.get('count')) + ' person(s)'}", flush=True)

    try:
        cameras = _edge_cameras(args, specs, size)
        runner = cameras[0].edge.runner
        cfg = SendConfig(args.format, args.quality, size, obfuscator_id(runner),
                         args.retry_for if args.retry_for is not None else DEFAULT_RETRY_FOR, show)
        try:
            with cleanup_on_sigterm("edge"):
                Fleet(cameras, client, cfg).run()
        except (KeyboardInterrupt, Terminated):
            _edge_report(args, cameras, client, size)  # what was delivered and what waits in the spool
            raise
        finally:
            for cam in cameras:
                if cam.spool is not None:
                    cam.spool.close()  # its lock: an in-process caller may start another client on the folder
    finally:
        client.close()
    return _edge_report(args, cameras, client, size)
