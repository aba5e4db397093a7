"""A loopback TCP relay between an agent and its server that can lose the connection in the
middle of a call: ``stall()`` stops passing the server's bytes (a call the agent starts then
waits), ``cut()`` closes every relayed connection at once, as a crashed server or a dropped
network path does. The bytes are passed through untouched (TLS is end to end)."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableRelay:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stalled = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.sent_while_stalled = 0  # agent → server bytes since stall(): a call under way
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        with self._lock:
            self.sent_while_stalled = 0
        self._stalled.set()

    def cut(self) -> None:
        """Close every open connection (the agent's call in flight fails); new ones pass."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        self._stalled.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if to_server:
                    with self._lock:
                        if self._stalled.is_set():
                            self.sent_while_stalled += len(data)
                elif self._stalled.is_set():
                    continue  # the server's answer never arrives
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
