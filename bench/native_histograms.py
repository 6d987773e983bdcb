#!/usr/bin/env python3
"""What a Prometheus native histogram would cost per hop, measured against the classic one.

Serves the latency of N hops two ways on loopback, both from the same samples: the classic
histogram `[agent] detail = "full"` exports (15 bounds, so 16 buckets, `_sum`, `_count`, in the
text format) and a native histogram (exponential buckets at schema 3, one series, in the
protobuf exposition, the only one Prometheus reads them from). A real Prometheus, started with
`--enable-feature=native-histograms` as 2.40 to 3.8 need, scrapes both every second; the script
prints the series and samples Prometheus ingested per hop, the bytes per hop of each exposition,
and p99 from each, to show the detail is there.

    bench/native_histograms.py [--hops 1000] [--seconds 20] [--prometheus PATH]

Not part of `bench/run` or CI: it informed a decision (docs/performance-and-cost.md, Cost). Loopback only; every
process it starts is killed and its scratch directory removed.
"""

import argparse
import http.server
import json
import math
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
SCHEMA = 3  # buckets 2^(1/8) wide: 9 %


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n):
    return (n << 1) ^ (n >> 63)


def field(number, wire, payload):
    return varint(number << 3 | wire) + payload


def length(number, data):
    return field(number, 2, varint(len(data)) + data)


def uint(number, n):
    return field(number, 0, varint(n))


def sint(number, n):
    return field(number, 0, varint(zigzag(n)))


def double(number, x):
    return field(number, 1, struct.pack("<d", x))


def packed_sint(number, values):
    return length(number, b"".join(varint(zigzag(v)) for v in values))


class Hop:
    """One hop's cumulative latency: the samples so far, as both kinds of histogram."""

    def __init__(self, rng, chain, hop):
        self.chain, self.hop = chain, hop
        # A hop's own spread: a median of 1-20 ms, a tail an order of magnitude out.
        self.median = rng.uniform(0.001, 0.02)
        self.rng = rng
        self.classic = [0] * (len(BOUNDS) + 1)
        self.native = {}
        self.count = 0
        self.sum = 0.0
        # (when, value) of every sample: the exact p99 to compare both with.
        self.recent = []

    def observe(self):
        v = self.median * math.exp(self.rng.gauss(0, 0.6))
        self.recent.append((time.time(), v))
        self.count += 1
        self.sum += v
        i = next((k for k, b in enumerate(BOUNDS) if v <= b), len(BOUNDS))
        self.classic[i] += 1
        index = math.ceil(math.log2(v) * 2**SCHEMA)
        self.native[index] = self.native.get(index, 0) + 1

    def labels(self):
        return f'chain="{self.chain}",hop="{self.hop}"'

    def text(self):
        out, cumulative = [], 0
        for b, n in zip([*map(repr, BOUNDS), "+Inf"], self.classic):
            cumulative += n
            out.append(f'hopwatch_probe_duration_seconds_bucket{{{self.labels()},le="{b}"}} {cumulative}')
        out.append(f"hopwatch_probe_duration_seconds_sum{{{self.labels()}}} {self.sum!r}")
        out.append(f"hopwatch_probe_duration_seconds_count{{{self.labels()}}} {self.count}")
        return "\n".join(out) + "\n"

    def metric(self):
        """A Metric message with a native histogram: spans of consecutive buckets, deltas."""
        indexes = sorted(self.native)
        spans, deltas, previous_end, previous_count = [], [], None, 0
        for i in indexes:
            if previous_end is None or i != previous_end:
                offset = i if previous_end is None else i - previous_end
                spans.append([offset, 0])
            spans[-1][1] += 1
            previous_end = i + 1
            deltas.append(self.native[i] - previous_count)
            previous_count = self.native[i]
        h = uint(1, self.count) + double(2, self.sum) + sint(5, SCHEMA) + double(6, 0.0)
        h += uint(7, 0)
        for offset, n in spans:
            h += length(12, sint(1, offset) + uint(2, n))
        h += packed_sint(13, deltas)
        labels = b"".join(
            length(1, length(1, k.encode()) + length(2, v.encode()))
            for k, v in (("chain", self.chain), ("hop", self.hop))
        )
        return labels + length(7, h)


def protobuf(hops):
    family = length(1, b"hopwatch_probe_duration_seconds")
    family += length(2, b"Total time of successful probes.") + uint(3, 4)
    family += b"".join(length(4, h.metric()) for h in hops)
    return varint(len(family)) + family


def text(hops):
    head = "# HELP hopwatch_probe_duration_seconds Total time of successful probes.\n"
    head += "# TYPE hopwatch_probe_duration_seconds histogram\n"
    return head + "".join(h.text() for h in hops)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(hops, lock, sizes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with lock:
                if self.path.startswith("/native"):
                    body = protobuf(hops)
                    kind = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
                else:
                    body = text(hops).encode()
                    kind = "text/plain; version=0.0.4"
                sizes[self.path.strip("/")] = len(body)
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def query(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["data"]["result"]


def scalar(port, expr):
    result = query(port, expr)
    return float(result[0]["value"][1]) if result else float("nan")


def main():
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--hops", type=int, default=1000)
    args.add_argument("--seconds", type=int, default=20)
    args.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    o = args.parse_args()
    rng = random.Random(25)
    hops = [Hop(rng, f"c{i // 4}", ["gateway", "nlb", "alb", "target"][i % 4]) for i in range(o.hops)]
    lock, sizes = threading.Lock(), {}
    for _ in range(300):  # five minutes of a 1 s interval before the first scrape
        for h in hops:
            h.observe()
    server = serve(hops, lock, sizes)
    target = f"127.0.0.1:{server.server_address[1]}"
    port = free_port()
    scratch = tempfile.mkdtemp(prefix="hopwatch-nh-")
    try:
        with open(f"{scratch}/prometheus.yml", "w") as f:
            f.write(
                "global: {scrape_interval: 1s}\nscrape_configs:\n"
                f"  - {{job_name: native, metrics_path: /native, static_configs: [{{targets: ['{target}']}}]}}\n"
                f"  - {{job_name: classic, metrics_path: /classic, static_configs: [{{targets: ['{target}']}}]}}\n"
            )
        prometheus = subprocess.Popen(
            [
                o.prometheus,
                f"--config.file={scratch}/prometheus.yml",
                f"--storage.tsdb.path={scratch}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=native-histograms",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            end = time.time() + o.seconds
            while time.time() < end:
                time.sleep(0.5)
                with lock:
                    for h in hops:
                        h.observe()
            series = {
                job: scalar(port, f'count({{job="{job}",__name__=~"hopwatch_.*"}})')
                for job in ("native", "classic")
            }
            samples = {
                job: scalar(port, f'scrape_samples_scraped{{job="{job}"}}') for job in ("native", "classic")
            }
            p99 = {
                "native": scalar(
                    port,
                    'histogram_quantile(0.99, rate(hopwatch_probe_duration_seconds{job="native",chain="c0",hop="gateway"}[10s]))',
                ),
                "classic": scalar(
                    port,
                    'histogram_quantile(0.99, rate(hopwatch_probe_duration_seconds_bucket{job="classic",chain="c0",hop="gateway"}[10s]))',
                ),
            }
            buckets = sum(len(h.native) for h in hops) / len(hops)
            # The exact p99 of the samples rate(...[10s]) saw, give or take a scrape.
            now = time.time()
            window = sorted(v for t, v in hops[0].recent if now - 11 <= t <= now - 1)
            exact = window[max(0, math.ceil(0.99 * len(window)) - 1)] if window else float("nan")
        finally:
            prometheus.kill()
            prometheus.wait()
    finally:
        server.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{o.hops} hops, {o.seconds} s of 1 s scrapes, Prometheus {o.prometheus} with native histograms on\n")
    print("| latency of a hop as | series per hop in Prometheus | samples per hop per scrape | bytes per hop per scrape | p99 of c0/gateway over 10 s |")
    print("|---|---:|---:|---:|---:|")
    for job, name in (("classic", "classic histogram, text (detail full)"), ("native", f"native histogram, protobuf, schema {SCHEMA}")):
        print(
            f"| {name} | {series[job] / o.hops:.1f} | {samples[job] / o.hops:.1f} | "
            f"{sizes.get(job, 0) / o.hops:.0f} | {p99[job] * 1e3:.2f} ms |"
        )
    print(f"\nexact p99 of c0/gateway's samples over those 10 s: {exact * 1e3:.2f} ms")
    print(f"native buckets populated per hop: {buckets:.1f} (of a spread of about one decade)")
    if any(math.isnan(v) for v in (*series.values(), *samples.values())):
        sys.exit("Prometheus answered nothing: did it scrape?")


if __name__ == "__main__":
    main()
