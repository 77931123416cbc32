"""A small TCP proxy for fault tests: forwards 127.0.0.1 connections to a server and can cut them.

    proxy = FaultProxy(("127.0.0.1", server_port)); proxy.start()
    proxy.cut_after_bytes = 1_000_000   # every connection dies once it has carried ~1 MB upstream
    proxy.cut_after_bytes = None        # back to a clean pipe
"""

from __future__ import annotations

import socket
import threading


class FaultProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut_after_bytes: int | None = None
        self.stall_s: float = 0.0
        self.connections = 0
        self.cuts = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        threading.Thread(target=self._accept, daemon=True).start()
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
            self.connections += 1
            upstream = socket.create_connection(self.target)
            limit = self.cut_after_bytes
            threading.Thread(target=self._pipe, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        carried = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.stall_s:
                    threading.Event().wait(self.stall_s)
                carried += len(data)
                if limit is not None and carried > limit:
                    self.cuts += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
