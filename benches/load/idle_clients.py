#!/usr/bin/env python3
"""Open N keep-alive HTTP/1.1 connections to 127.0.0.1:PORT, send one GET
on each and read its response, then hold them all idle until stdin closes.

Prints "ready N" once every connection has had its response (the proxy
then holds N idle keep-alive client connections). Loopback only.

Usage: idle_clients.py PORT N
"""
import selectors
import socket
import sys


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    sel = selectors.DefaultSelector()
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    socks = []
    pending = 0
    # Connect in batches so the listen backlog never overflows.
    for start in range(0, n, 500):
        for _ in range(start, min(n, start + 500)):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(req)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
            socks.append(s)
            pending += 1
        # Read responses until each has its whole header and body.
        while pending > (n - min(n, start + 500)):
            for key, _ in sel.select(timeout=30):
                buf = key.data
                try:
                    chunk = key.fileobj.recv(4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    sys.exit("connection closed before its response")
                buf += chunk
                head, sep, body = bytes(buf).partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                if len(body) >= length:
                    sel.unregister(key.fileobj)
                    pending -= 1
    print("ready", len(socks), flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
