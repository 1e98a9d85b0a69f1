"""Load and faults against a real ``portraitseg serve`` process on 127.0.0.1 (bundled model).

    python experiments/serve_load/bench.py --out experiments/serve_load/results.json
    python experiments/serve_load/bench.py --requests 4 --clients 2 --warm 2 --size 160x120  # smoke test

1. **Start-up**: seconds from starting the server process to its first served portrait.
2. **Load**: ``--requests`` POSTs of one ``--size`` JPEG (scikit-image's astronaut, resized) from
   ``--clients`` concurrent clients (one keep-alive connection each): every status, p50/p95
   latency, requests per second, and the server's RSS (``/proc/<pid>/status`` VmRSS) after the
   first ``--warm`` requests and after all of them (a leak shows as growth).
3. **Faults**, one after another, each timed: not an image, a truncated JPEG, a decompression
   bomb (a few kB of PNG declaring more pixels than ``--max-pixels``), a declared body over
   ``--max-upload-bytes``, a chunked body that grows past it, an upload slower than ``--timeout``
   (headers, 10 bytes, then silence). Each must be a 4xx within the timeout; then the server must
   still answer ``/api/health`` and render a portrait.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

MAX_UPLOAD = 2_000_000
MAX_PIXELS = 4_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def photo_jpeg(size: tuple[int, int]) -> bytes:
    from skimage.data import astronaut

    buf = io.BytesIO()
    Image.fromarray(astronaut()).resize(size, Image.LANCZOS).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, float, bytes]:
    start = time.perf_counter()
    conn.request("POST", "/api/portrait", body=body, headers={"Content-Type": "image/jpeg"})
    response = conn.getresponse()
    data = response.read()
    return response.status, time.perf_counter() - start, data


def start_server(port: int, timeout: int, threads: int | None) -> tuple[subprocess.Popen, float, float]:
    """The server process, seconds to a healthy ``/api/health`` and to the first portrait."""
    cmd = [sys.executable, "-m", "portraitseg.cli.main", "serve", "--port", str(port), "--log-level",
           "warning", "--timeout", str(timeout), "--max-upload-bytes", str(MAX_UPLOAD), "--max-pixels",
           str(MAX_PIXELS), "--queue", "64"] + (["--threads", str(threads)] if threads else [])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/api/health")
            conn.getresponse().read()
            break
        except OSError:
            if proc.poll() is not None or time.perf_counter() - start > 180:
                proc.kill()
                raise SystemExit(f"the server did not start: {proc.stderr.read()}") from None
            time.sleep(0.05)
    healthy = time.perf_counter() - start
    status, _, _ = post(conn, photo_jpeg((64, 48)))
    assert status == 200, status
    return proc, healthy, time.perf_counter() - start


def load(port: int, body: bytes, count: int, clients: int) -> tuple[list[int], list[float]]:
    """``count`` POSTs of ``body`` from ``clients`` threads; statuses and latencies."""
    statuses, latencies, lock = [], [], threading.Lock()
    left = iter(range(count))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if next(left, None) is None:
                    return
            status, seconds, _ = post(conn, body)
            with lock:
                statuses.append(status)
                latencies.append(seconds)

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return statuses, latencies


def raw_exchange(port: int, head: bytes, chunks: list[bytes]) -> tuple[int, str]:
    """Send ``head`` and ``chunks`` on a socket (stopping when the server answers or closes),
    then read the reply: its status and its JSON error."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(head)
        try:
            for chunk in chunks:
                conn.sendall(chunk)
        except OSError:  # the server answered early and closed: read its reply below
            pass
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            more = conn.recv(65536)
            if not more:
                break
            reply += more
    text = reply.decode("latin-1")
    status = int(text.split(" ", 2)[1]) if text.startswith("HTTP/") else 0
    return status, text.partition("\r\n\r\n")[2]


def faults(port: int, jpeg: bytes, timeout: int) -> list[dict]:
    """Each bad request: status, seconds, message."""
    bomb = io.BytesIO()
    Image.fromarray(np.zeros((2500, 2000), np.uint8)).save(bomb, "PNG")  # 5 MP in a few kB

    def request(body: bytes, length: int | None = None) -> bytes:
        head = f"POST /api/portrait HTTP/1.1\r\nHost: x\r\nContent-Length: {length or len(body)}\r\n\r\n"
        return head.encode() + body

    cases = [
        ("not an image", request(b"%PDF-1.4 not a photo"), []),
        ("truncated JPEG", request(jpeg[: len(jpeg) // 3]), []),
        (f"decompression bomb ({len(bomb.getvalue()):,} B PNG, 5 MP)", request(bomb.getvalue()), []),
        ("declared body over the limit", request(b"", MAX_UPLOAD + 1), []),
        ("chunked body growing past the limit",
         b"POST /api/portrait HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
         [b"10000\r\n" + b"\xff" * 0x10000 + b"\r\n"] * (MAX_UPLOAD // 0x10000 + 4)),
        (f"upload slower than the {timeout} s timeout", request(b"", 100_000), [b"\xff" * 10]),
    ]
    rows = []
    for what, head, chunks in cases:
        start = time.perf_counter()
        status, body = raw_exchange(port, head, chunks)
        seconds = time.perf_counter() - start
        rows.append({"fault": what, "status": status, "seconds": round(seconds, 3),
                     "error": json.loads(body).get("error", "") if body.startswith("{") else body[:200]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warm", type=int, default=20, help="requests before the first RSS reading")
    parser.add_argument("--size", default="640x480", help="photo size WxH")
    parser.add_argument("--timeout", type=int, default=3, help="the server's --timeout (seconds)")
    parser.add_argument("--threads", type=int, help="the server's --threads")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    jpeg = photo_jpeg((width, height))
    port = free_port()
    proc, healthy, first = start_server(port, args.timeout, args.threads)
    try:
        warm = load(port, jpeg, args.warm, args.clients)
        rss_warm = rss_mb(proc.pid)
        start = time.perf_counter()
        rest = load(port, jpeg, args.requests - args.warm, args.clients)
        wall = time.perf_counter() - start
        rss_end = rss_mb(proc.pid)
        statuses, latencies = warm[0] + rest[0], warm[1] + rest[1]
        fault_rows = faults(port, jpeg, args.timeout)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/api/health")
        health = json.loads(conn.getresponse().read())
        after, _, _ = post(conn, jpeg)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    quantiles = statistics.quantiles(latencies, n=20, method="inclusive")  # needs 2 requests or more
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg(), "photo": f"{width}x{height} JPEG, {len(jpeg):,} B",
        "startup_s": {"healthy": round(healthy, 2), "first_portrait": round(first, 2)},
        "requests": len(statuses), "clients": args.clients,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "latency_s": {"p50": round(statistics.median(latencies), 3), "p95": round(quantiles[18], 3),
                      "max": round(max(latencies), 3)},
        "throughput_rps": round(len(rest[0]) / wall, 2) if rest[0] else None,
        "rss_mb": {f"after_{args.warm}": round(rss_warm, 1), f"after_{len(statuses)}": round(rss_end, 1),
                   "growth": round(rss_end / rss_warm - 1, 4)},
        "faults": fault_rows, "after_faults": {"health_ok": health["ok"], "queue": health["queue"],
                                               "portrait_status": after},
    }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    ok = (set(statuses) == {200} and after == 200 and health["ok"]
          and all(400 <= r["status"] < 500 and r["seconds"] < args.timeout + 2 for r in fault_rows))
    print("all checks passed" if ok else "CHECKS FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
