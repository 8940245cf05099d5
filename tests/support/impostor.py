"""A fake Toopher service run by an unprivileged local user (issue 14, item 1).

It answers every call "granted" for whatever user and terminal it is asked
about, and prints one line per request it receives, so a test can show both
that such a server would let a login through a module that believed it, and
that the module never talked to it.

    with Impostor("::1", port) as impostor:     # runs as nobody
        ...
        assert impostor.requests() == []

The server is this file run by /usr/bin/python3 as ``nobody``; its source is
handed over on the command line, so it needs no access to the checkout.
"""
from __future__ import annotations

import os
import select
import subprocess
import time
from typing import List

UNPRIVILEGED_UID = 65534  # nobody

SERVER_SOURCE = r'''
import json, socket, sys, uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qsl, urlsplit

class Handler(BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        form.update(parse_qsl(urlsplit(self.path).query))
        print("request", self.command, self.path, flush=True)
        user = form.get("user_name", "anyone")
        terminal = form.get("terminal_name_extra") or form.get("terminal_requester_specified_id", "t")
        user_object = {"id": str(uuid.uuid4()), "name": user, "toopher_authentication_enabled": True}
        body = {"id": str(uuid.UUID(int=1)), "pending": False, "granted": True, "automated": False,
                "reason": "granted by an impostor", "reason_code": 0,
                "terminal": {"id": str(uuid.uuid4()), "name": terminal,
                             "requester_specified_id": terminal, "user": user_object},
                "user": user_object, "action": {"id": str(uuid.uuid4()), "name": "log in"}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass

class Server(HTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET

server = Server((sys.argv[1], int(sys.argv[2])), Handler)
print("listening", flush=True)
server.serve_forever()
'''


class Impostor:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Impostor":
        def become_nobody() -> None:
            os.setgroups([])
            os.setgid(UNPRIVILEGED_UID)
            os.setuid(UNPRIVILEGED_UID)

        self.process = subprocess.Popen(
            ["/usr/bin/python3", "-I", "-c", SERVER_SOURCE, self.host, str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/",
            preexec_fn=become_nobody)
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        line = self.process.stdout.readline().strip() if ready else "no answer"
        if line != "listening":
            self.__exit__()
            raise RuntimeError(f"the impostor did not start: {line}")
        return self

    def requests(self) -> List[str]:
        """The requests received so far (reads what the server printed)."""
        lines = []
        assert self.process is not None and self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line:
                lines.append(line.strip())
            else:
                time.sleep(0.02)
        return [line for line in lines if line.startswith("request ")]

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
