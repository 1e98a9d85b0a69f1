"""``portraitseg serve``: the portrait pipeline behind a local HTTP API and a web page.

The model is loaded once, before the server listens (:meth:`portraitseg.serve.engine.Engine.load`)
and warmed up on a small photo, so the first request is served at full speed; the server then runs
until Ctrl-C. Loopback only by default (``--host 0.0.0.0`` serves the network).

Exit status: 0 stopped by Ctrl-C or SIGTERM, 2 usage errors (no model, a port in use, a bad limit).
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import time
from typing import Any

from portraitseg.argtypes import int_in
from portraitseg.cli.photos import say
from portraitseg.cli.render import UsageError, _default_preset, _model_file, pick_device, render_presets
from portraitseg.config import DEFAULT_MAX_PIXELS
from portraitseg.serve.limits import DEFAULT_HOST, DEFAULT_PORT, ServeLimits

#: the photo the model is warmed up on before the server listens (pixels per side)
WARMUP_SIDE = 64


def check_port(host: str, port: int) -> None:
    """The address is free to listen on; :class:`UsageError` naming it and the fix otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: not an address of this machine ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UsageError(f"port {port} on {host} is in use (another server?): pass another "
                                 "--port, or stop the other one") from None
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None


def limits_of(args: argparse.Namespace) -> ServeLimits:
    return ServeLimits(max_upload_bytes=args.max_upload_bytes, max_pixels=args.max_pixels,
                       workers=args.workers, queue=args.queue, timeout=args.timeout, quality=args.quality)


def build_app(args: argparse.Namespace) -> Any:
    """The application with its model loaded and warmed up; :class:`UsageError` if unusable."""
    import numpy as np

    from portraitseg.io import InputError
    from portraitseg.pipeline import PipelineError
    from portraitseg.serve.app import create_app
    from portraitseg.serve.engine import Engine

    model = _model_file(args.ckpt)
    try:
        engine = Engine.load(model, args.render, limits_of(args), str(pick_device(args.device)), args.threads)
    except (FileNotFoundError, InputError, PipelineError) as err:  # CheckpointError is an InputError
        raise UsageError(str(err)) from None
    engine.model = "default" if args.ckpt in (None, "default") else str(args.ckpt)
    engine.base(np.zeros((WARMUP_SIDE, WARMUP_SIDE, 3), np.uint8))
    return create_app(engine)


def run(args: argparse.Namespace) -> int:
    """``portraitseg serve``; returns the exit status."""
    from portraitseg.runtime import prefer_passive_wait

    prefer_passive_wait()  # before PyTorch is imported: OpenMP reads it once
    start = time.perf_counter()
    try:
        check_port(args.host, args.port)
        app = build_app(args)
    except UsageError as err:
        say(f"portraitseg serve: error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    shown = f"[{args.host}]" if ":" in args.host else args.host
    say(f"portraitseg serve: model loaded in {time.perf_counter() - start:.1f} s; open "
        f"http://{shown}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: listening on {args.host}: anyone who can reach this machine can send photos",
            file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                limit_concurrency=args.max_connections, timeout_keep_alive=5)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``portraitseg serve`` and set ``func`` to :func:`run`."""
    presets = render_presets()
    default_preset = _default_preset()
    defaults = ServeLimits()
    parser = subparsers.add_parser(
        "serve", help="serve portraits over HTTP, with a web page",
        description="Load the portrait pipeline once and serve photo -> portrait over HTTP "
                    "(POST /api/portrait, GET /api/health) and a web page at /.")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default: {DEFAULT_HOST}, this machine only; "
                             "0.0.0.0: every interface)")
    parser.add_argument("--port", type=int_in(1, 65535), default=DEFAULT_PORT,
                        help=f"TCP port (default: {DEFAULT_PORT})")
    parser.add_argument("--ckpt", metavar="PATH", help="segmenter: a checkpoint from `python train.py` or an "
                        "exported weights file (default: the bundled model)")
    parser.add_argument("--render", default=default_preset, choices=presets or None, metavar="PRESET",
                        help=f"default render preset ({', '.join(presets)}; default: {default_preset}); "
                             "a request's preset parameter chooses another")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda if available (default)")
    parser.add_argument("--threads", type=int_in(1), metavar="N",
                        help="CPU threads of a render (default: one per usable core, or OMP_NUM_THREADS)")
    group = parser.add_argument_group("limits")
    group.add_argument("--max-upload-bytes", type=int_in(1), default=defaults.max_upload_bytes, metavar="N",
                       help=f"largest upload; larger ones get 413 (default: {defaults.max_upload_bytes:,})")
    group.add_argument("--max-pixels", type=int_in(1), default=DEFAULT_MAX_PIXELS, metavar="N",
                       help="largest photo, width x height; larger ones get 413 "
                            f"(default: {DEFAULT_MAX_PIXELS:,})")
    group.add_argument("--workers", type=int_in(1, 64), default=defaults.workers, metavar="N",
                       help=f"renders run at once (default: {defaults.workers}; a render uses every core)")
    group.add_argument("--queue", type=int_in(0, 1024), default=defaults.queue, metavar="N",
                       help=f"renders waiting beyond those running; more get 503 + Retry-After "
                            f"(default: {defaults.queue})")
    group.add_argument("--timeout", type=int_in(1, 3600), default=int(defaults.timeout), metavar="S",
                       help="seconds to receive a whole upload; slower ones get 408 "
                            f"(default: {defaults.timeout:g})")
    group.add_argument("--quality", type=int_in(1, 100), default=defaults.quality,
                       help=f"JPEG quality of the portraits (default: {defaults.quality})")
    group.add_argument("--max-connections", type=int_in(1), default=64, metavar="N",
                       help="open connections at once; more get 503 (default: 64)")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (info: one line per request; default)")
    parser.set_defaults(func=run)
    return parser
