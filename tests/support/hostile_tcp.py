"""A loopback TCP listener that answers with whatever bytes a test gives it:
for peers that do not speak HTTP, or speak it wrongly, which no HTTP server
library would produce (a bad status line, 101 headers, a 70 KB header line,
a TLS handshake reset half-way)."""
import socket
import struct
import threading
from typing import Callable, List


def read_request(connection: socket.socket) -> bytes:
    """Read until the end of the request's headers (our requests' bodies are
    small and not needed here)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def reset(connection: socket.socket) -> None:
    """Close with RST rather than FIN."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


class HostileServer:
    """Runs ``serve(connection)`` for each connection, in its own thread."""

    def __init__(self, serve: Callable[[socket.socket], None]):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: List[socket.socket] = []
        self.accepted = 0

        def handle(connection: socket.socket) -> None:
            try:
                serve(connection)
            except OSError:
                pass
            finally:
                try:
                    connection.close()
                except OSError:
                    pass

        def accept() -> None:
            while True:
                try:
                    connection, _ = self.listener.accept()
                except OSError:
                    return
                self.accepted += 1
                self.connections.append(connection)
                threading.Thread(target=handle, args=(connection,), name="raw-hostile",
                                 daemon=True).start()
        self.thread = threading.Thread(target=accept, name="raw-hostile-accept", daemon=True)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "HostileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)   # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()
        for connection in self.connections:
            try:
                connection.close()
            except OSError:
                pass
