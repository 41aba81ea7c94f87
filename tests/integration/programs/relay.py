#!/usr/bin/env python3
"""A ProxyCommand for tests: relays stdin/stdout to HOST PORT and leaves a marker it ran."""

import os
import selectors
import socket
import sys

host, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(marker, "a") as out:
    out.write(f"relayed to {host}:{port}\n")
sock = socket.create_connection((host, port))
sel = selectors.DefaultSelector()
sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "in")
sel.register(sock, selectors.EVENT_READ, "sock")
while True:
    for key, _ in sel.select():
        if key.data == "in":
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                sock.shutdown(socket.SHUT_WR)
                sel.unregister(sys.stdin.fileno())
                continue
            sock.sendall(data)
        else:
            data = sock.recv(65536)
            if not data:
                sys.exit(0)
            os.write(sys.stdout.fileno(), data)
