#!/usr/bin/env python
"""A bounded load test of ``asuka serve`` on 127.0.0.1 with the shipped demo model.

Starts ``python -m asuka serve`` in a subprocess (its peak RSS is sampled every 50 ms with
psutil) and, at the same time:

* ``clients``: 20 concurrent clients, each sending ``--requests`` ``POST /api/inpaint`` of a
  512 x 512 photo with a small hole; a 503 is a rejection, retried after its Retry-After;
* ``slow``: 100 slow sockets (50 dribble their headers a byte a second, 50 send headers and
  then stall their body: these must get 408, not hold a worker);
* ``leavers``: 10 clients that send a request and close the connection after 0.2 s (their
  jobs must be cancelled: ``after_leavers`` is one request's latency right after them);
* ``big``: four 50 MP PNG uploads (small files: smooth content) with a small hole, at once.

Prints per group: requests, answers by status, rejections (503), 5xx, latency p50/p95 of the
successful ones; then the server's peak RSS. Targets: no 5xx, peak RSS < 2.5 GB.

    python benchmarks/bench_serve.py [--steps 10] [--requests 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "benchBoundary42"


def multipart(files: dict, fields: dict) -> bytes:
    body = b""
    for name, data in files.items():
        body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n"
                 "Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    for name, value in fields.items():
        body += f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
    return body + f"--{BOUNDARY}--\r\n".encode()


def png(array, level=6) -> bytes:
    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = collections.Counter()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.count = collections.Counter()

    def add(self, group: str, status, seconds: float | None = None):
        with self.lock:
            self.status[(group, status)] += 1
            self.count[group] += 1
            if seconds is not None and status == 200:
                self.latency[group].append(seconds)


def post(port, body, timeout=600.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/inpaint", body=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    except (OSError, http.client.HTTPException) as exc:
        return f"error:{type(exc).__name__}", None
    finally:
        conn.close()


def client(port, body, n, tally, group="clients", max_tries=30):
    for _ in range(n):
        for _ in range(max_tries):
            started = time.perf_counter()
            status, retry = post(port, body)
            tally.add(group, status, time.perf_counter() - started)
            if status != 503:
                break
            time.sleep(min(float(retry or 1), 5.0))


def slow_socket(port, kind, tally, stop):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    except OSError as exc:
        tally.add("slow", f"connect:{type(exc).__name__}")
        return
    try:
        if kind == "headers":  # a byte a second, never finishing the headers
            for byte in b"POST /api/inpaint HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
                if stop.is_set():
                    break
                sock.sendall(bytes([byte]))
                time.sleep(1.0)
            tally.add("slow", "held")
        else:  # headers, a little body, then nothing: the server must answer 408
            sock.sendall((f"POST /api/inpaint HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                          f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n--{BOUNDARY}\r\n").encode())
            answer = sock.recv(4096).decode("latin-1")
            tally.add("slow", int(answer.split()[1]) if answer.startswith("HTTP/") else "closed")
    except OSError as exc:
        tally.add("slow", f"error:{type(exc).__name__}")
    finally:
        sock.close()


def leaver(port, body, tally):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"POST /api/inpaint HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + body)
    time.sleep(0.2)
    sock.close()
    tally.add("leavers", "left")


def sample_rss(pid, stop, peak):
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="denoising steps per request")
    p.add_argument("--requests", type=int, default=3, help="requests per concurrent client")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    p.add_argument("--model", default=None, help="default: the shipped demo model")
    args = p.parse_args(argv)

    import numpy as np

    rng = np.random.default_rng(0)
    photo = (rng.random((512, 512, 3)) * 255).astype(np.uint8)
    hole = np.zeros((512, 512), np.uint8)
    hole[200:260, 220:300] = 255
    small = multipart({"image": png(photo), "mask": png(hole)}, {"seed": 0})
    h, w = 5773, 8660  # 50.0 MP; smooth content, so the file is small as in the report
    gradient = np.linspace(0, 255, w, dtype=np.float32).astype(np.uint8)
    big_photo = np.repeat(np.repeat(gradient[None, :, None], 3, axis=2), h, axis=0)
    big_hole = np.zeros((h, w), np.uint8)
    big_hole[2800:2860, 4300:4400] = 255
    big = multipart({"image": png(big_photo, 9), "mask": png(big_hole, 9)}, {"seed": 0})
    del big_photo, big_hole
    print(f"bench_serve: 512x512 request {len(small) / 1024:.0f} KiB, 50 MP request {len(big) / 1024:.0f} KiB")

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    command = [sys.executable, "-m", "asuka", "serve", "--port", str(port), "--steps", str(args.steps),
               "--upload-timeout", "5", "--quiet"]
    if args.model:
        command += ["--model", args.model]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop, peak = threading.Event(), [0]
    log_lines = []
    try:
        for line in server.stdout:
            log_lines.append(line)
            if "serving" in line:
                break
        else:
            print("".join(log_lines), file=sys.stderr)
            return 1
        threading.Thread(target=lambda: log_lines.extend(server.stdout), daemon=True).start()
        sampler = threading.Thread(target=sample_rss, args=(server.pid, stop, peak), daemon=True)
        sampler.start()
        idle = peak[0]
        time.sleep(0.3)
        idle = peak[0]
        tally = Tally()
        started = time.perf_counter()

        slow_stop = threading.Event()
        slow = [threading.Thread(target=slow_socket, args=(port, "headers" if k % 2 else "body", tally, slow_stop),
                                 daemon=True) for k in range(100)]
        clients = [threading.Thread(target=client, args=(port, small, args.requests, tally)) for _ in range(20)]
        for t in slow + clients:
            t.start()
        for t in clients:
            t.join()

        leavers = [threading.Thread(target=leaver, args=(port, small, tally)) for _ in range(10)]
        for t in leavers:
            t.start()
        for t in leavers:
            t.join()
        client(port, small, 1, tally, group="after_leavers")

        bigs = [threading.Thread(target=client, args=(port, big, 1, tally, "big")) for _ in range(4)]
        for t in bigs:
            t.start()
        for t in bigs:
            t.join()
        slow_stop.set()
        for t in slow:
            t.join(timeout=5)
        total = time.perf_counter() - started
        time.sleep(0.2)
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    print(f"bench_serve: {total:.1f} s, server {'asuka-small' if not args.model else args.model}, "
          f"{args.steps} steps, {args.threads} torch thread(s)")
    print(f"{'group':<14} {'answers':<40} {'rejected':>8} {'5xx':>4} {'p50 s':>7} {'p95 s':>7}")
    fivexx = 0
    for group in ("clients", "slow", "leavers", "after_leavers", "big"):
        answers = {status: n for (g, status), n in tally.status.items() if g == group}
        rejected = answers.get(503, 0)
        errors = sum(n for status, n in answers.items() if isinstance(status, int) and status >= 500 and status != 503)
        fivexx += errors
        latency = tally.latency.get(group, [])
        text = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items(), key=str))
        p50 = f"{statistics.median(latency):.2f}" if latency else "-"
        p95 = f"{percentile(latency, 0.95):.2f}" if latency else "-"
        print(f"{group:<14} {text:<40} {rejected:>8} {errors:>4} {p50:>7} {p95:>7}")
    tracebacks = sum("Traceback" in line for line in log_lines)
    print(f"5xx other than 503: {fivexx}; tracebacks in the server's log: {tracebacks}")
    print(f"server RSS: idle {idle / 2**30:.2f} GB, peak {peak[0] / 2**30:.2f} GB (target < 2.5 GB)")
    return 0 if fivexx == 0 and peak[0] < 2.5 * 2**30 else 1


if __name__ == "__main__":
    sys.exit(main())
