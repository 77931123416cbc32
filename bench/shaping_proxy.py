"""A loopback TCP proxy that shapes traffic the way a remote object store does, for benchmarks.

What it does, and nothing more:
- every accepted connection gets its own upstream connection to the target (one client connection
  = one server connection; no pooling, no HTTP rewriting, bytes are forwarded unchanged);
- each direction of each connection is paced to at most `rate` bytes/s (MB = 1,000,000 bytes): a
  token bucket 5 ms deep (so oversleeping does not lower the rate, and an idle connection earns at
  most 5 ms of burst), forwarding in chunks of at most 16 KiB.
  Connections are independent: 8 parallel connections may carry 8x the rate, as on real S3 where
  one TCP stream tops out far below the bucket's aggregate bandwidth;
- a fixed `delay` before forwarding the first byte of each HTTP request (client -> server): a
  client burst that follows server bytes (or opens the connection) and begins with an HTTP method
  token (GET, PUT, POST, HEAD, DELETE, ...). A request body sent after the server's `100 Continue`
  is not a new request and is not delayed. This stands in for the time to first byte of a real
  endpoint (request latency); responses are only rate-paced.

It does not model packet loss, slow start, shared-link contention or server-side throttling.

Library use:   proxy = ShapingProxy(("127.0.0.1", 9000), rate=10e6, delay=0.020).start(); proxy.url
Command line:  python bench/shaping_proxy.py --target 127.0.0.1:9000 --rate-mb 10 --delay-ms 20
               (prints "listening http://127.0.0.1:PORT", then on SIGTERM/SIGINT one JSON line of counters)
Self-check:    python bench/shaping_proxy.py --selftest   (measures one connection's rate and the delay)
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time

CHUNK = 16 * 1024
BURST_S = 0.005  # token bucket depth: at most 5 ms of unused rate carries over (absorbs wake-up jitter)
METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ")


class ShapingProxy:
    def __init__(self, target: tuple[str, int], rate: float, delay: float, port: int = 0) -> None:
        self.target, self.rate, self.delay = target, float(rate), float(delay)
        self.connections = 0
        self.requests_delayed = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, float]:
        return {"connections": self.connections, "requests_delayed": self.requests_delayed,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "rate_bytes_per_s": self.rate, "delay_s": self.delay}

    def start(self) -> ShapingProxy:
        threading.Thread(target=self._accept, daemon=True, name="shaping-accept").start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
            # server_spoke[0]: the server sent bytes since the client last did (a turnaround), so the
            # client's next burst may start a new request. True at first: the opening request.
            server_spoke = [True]
            threading.Thread(target=self._pipe, args=(client, upstream, True, server_spoke), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False, server_spoke), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upward: bool, server_spoke: list[bool]) -> None:
        allowed_at = 0.0  # when the next chunk of this direction may leave
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if upward:
                    if server_spoke[0] and data.startswith(METHODS):
                        with self._lock:
                            self.requests_delayed += 1
                        time.sleep(self.delay)
                    server_spoke[0] = False
                else:
                    server_spoke[0] = True  # set before forwarding: the client cannot answer earlier
                now = time.monotonic()
                allowed_at = max(allowed_at, now - BURST_S)
                if allowed_at > now:
                    time.sleep(allowed_at - now)
                sink.sendall(data)
                allowed_at += len(data) / self.rate
                with self._lock:
                    if upward:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def _selftest(rate: float, delay: float) -> None:
    """One connection: 20 small request/response round trips, then a 5 MB upload and a 5 MB download."""
    size = 5_000_000
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        conn, _ = server.accept()
        while True:
            head = conn.recv(64)
            if not head:
                return
            if head.startswith(b"PUT "):  # "PUT n\n" then n bytes
                want = int(head.split()[1]) - (len(head) - len(head.split(b"\n", 1)[0]) - 1)
                while want > 0:
                    want -= len(conn.recv(min(want, 1 << 20)))
                conn.sendall(b"ok")
            elif head.startswith(b"BIG"):  # not a method token: no delay, rate only
                conn.sendall(b"x" * size)
            else:
                conn.sendall(b"ok")

    threading.Thread(target=serve, daemon=True).start()
    proxy = ShapingProxy(server.getsockname(), rate, delay).start()
    client = socket.create_connection(("127.0.0.1", proxy.port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.perf_counter()
    for _ in range(20):
        client.sendall(b"GET /\n")
        client.recv(16)
    per_request = (time.perf_counter() - start) / 20
    start = time.perf_counter()
    client.sendall(f"PUT {size}\n".encode() + b"y" * size)
    client.recv(16)
    up = size / (time.perf_counter() - start)
    start = time.perf_counter()
    client.sendall(b"BIG\n")
    got = 0
    while got < size:
        got += len(client.recv(1 << 20))
    down = size / (time.perf_counter() - start)
    print(f"round trip of a tiny request: {per_request * 1e3:.1f} ms (delay set to {delay * 1e3:.0f} ms)")
    print(f"one connection upload: {up / 1e6:.2f} MB/s, download: {down / 1e6:.2f} MB/s (cap {rate / 1e6:.1f} MB/s)")
    print(json.dumps(proxy.stats()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", help="host:port of the server, e.g. 127.0.0.1:9000")
    parser.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--rate-mb", type=float, default=10.0, help="MB/s (10^6 bytes) per connection and direction")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay before each HTTP request is forwarded")
    parser.add_argument("--selftest", action="store_true", help="measure the shaping on a local socket pair and exit")
    args = parser.parse_args()
    rate, delay = args.rate_mb * 1e6, args.delay_ms / 1e3
    if args.selftest:
        _selftest(rate, delay)
        return
    if not args.target:
        parser.error("--target is required")
    host, _, port = args.target.rpartition(":")
    proxy = ShapingProxy((host, int(port)), rate, delay, args.port).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"listening {proxy.url}", flush=True)
    while not done.wait(0.5):
        pass
    proxy.close()
    print(json.dumps(proxy.stats()), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
