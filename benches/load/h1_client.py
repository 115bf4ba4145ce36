"""An HTTP/1.1 load client that tells lost requests from refused connections.

    python3 h1_client.py HOST PORT SECONDS CONNECTIONS PATH [tls] [close]

Each connection sends GETs one after another on a keep-alive connection,
reconnecting when an answer says `Connection: close` (`tls`: over TLS,
unverified; `close`: each request asks for `Connection: close`, so every
request has a connection of its own). Counts, printed as
one line of `name=value`:
  ok        answers with status 200, read whole
  bad       other statuses
  refused   connects refused (after the listener closed: expected)
  reset     a new connection closed before any answer byte: what a
            connection still in the accept queue gets when the listener
            closes (expected at a shutdown, as with nginx's)
  unsent    a reused connection closed before any answer byte (the request
            was not processed; a client may send it again, RFC 9112 9.3.1)
  lost      the connection closed or broke after part of an answer
A server that drains cleanly shows lost=0 and unsent=0.
"""
import socket
import ssl
import sys
import threading
import time

host, port, seconds, conns, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
use_tls = "tls" in sys.argv[6:]
one_each = "close" in sys.argv[6:]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
counts = {"ok": 0, "bad": 0, "refused": 0, "reset": 0, "unsent": 0, "lost": 0}
lock = threading.Lock()
deadline = time.monotonic() + seconds
request = ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n"
           % (path, host, "Connection: close\r\n" if one_each else "")).encode()


def count(what):
    with lock:
        counts[what] += 1


def read_answer(f):
    """(status, close?); raises EOFError(0) when no byte of an answer came,
    EOFError(1) when it broke off after some."""
    try:
        line = f.readline()
    except (OSError, ssl.SSLError):
        raise EOFError(0)
    if not line:
        raise EOFError(0)
    try:
        return read_rest(f, line)
    except (OSError, ssl.SSLError, ValueError, IndexError):
        raise EOFError(1)


def read_rest(f, line):
    """The rest of an answer whose status line is `line`."""
    status = int(line.split()[1])
    length, close, chunked = 0, False, False
    while True:
        h = f.readline()
        if not h:
            raise EOFError(1)
        if h in (b"\r\n", b"\n"):
            break
        name, _, value = h.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value == b"close":
            close = True
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
    if chunked:
        while True:
            size = int(f.readline().split(b";")[0], 16)
            data = f.read(size + 2)
            if len(data) < size + 2:
                raise EOFError(1)
            if size == 0:
                break
    else:
        while length > 0:
            data = f.read(min(length, 1 << 16))
            if not data:
                raise EOFError(1)
            length -= len(data)
    return status, close


def worker():
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=30)
        except ConnectionRefusedError:
            count("refused")
            time.sleep(0.01)
            continue
        except OSError:
            count("refused")
            time.sleep(0.01)
            continue
        try:
            if use_tls:
                s = ctx.wrap_socket(s, server_hostname="localhost")
        except (OSError, ssl.SSLError):
            count("refused")
            s.close()
            continue
        f = s.makefile("rb")
        reused = False
        while time.monotonic() < deadline:
            try:
                s.sendall(request)
                status, close = read_answer(f)
            except EOFError as e:
                if e.args[0]:
                    count("lost")
                else:
                    count("unsent" if reused else "reset")
                break
            except (OSError, ssl.SSLError, ValueError):
                count("unsent" if reused else "reset")
                break
            count("ok" if status == 200 else "bad")
            reused = True
            if close:
                break
        try:
            s.close()
        except OSError:
            pass


threads = [threading.Thread(target=worker) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(" ".join("%s=%d" % kv for kv in counts.items()), flush=True)
