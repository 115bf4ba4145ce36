"""A real gRPC peer (grpcio, the C-core implementation) for the proxy tests.

    python3 grpc_peer.py server            # prints its port, serves until killed
    python3 grpc_peer.py client HOST:PORT [CA_FILE]   # prints OK or fails

Messages are raw bytes (no protoc needed). The four call types, an error
status carried in trailers, and a message big enough to need flow control.
"""
import sys
from concurrent import futures

import grpc

SVC = "test.Echo"


def unary(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request: fail")
    ctx.set_trailing_metadata((("x-served-by", "grpc-peer"),))
    return b"echo:" + req


def client_stream(reqs, ctx):
    return b"+".join(reqs)


def server_stream(req, ctx):
    for i in range(int(req)):
        yield b"part%d" % i


def bidi(reqs, ctx):
    for m in reqs:
        yield m.upper()


def serve(cert=None, key=None):
    handler = grpc.method_handlers_generic_handler(SVC, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 16 << 20)])
    server.add_generic_rpc_handlers((handler,))
    if cert:
        # TLS with this certificate (h2 by ALPN), as a gRPC service on the
        # public internet would be.
        with open(cert, "rb") as c, open(key, "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def check(target, ca=None):
    opts = [("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 16 << 20)]
    if ca:
        creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        opts.append(("grpc.ssl_target_name_override", "localhost"))
        channel = grpc.secure_channel(target, creds, options=opts)
    else:
        channel = grpc.insecure_channel(target, options=opts)
    t = 20
    call = channel.unary_unary("/%s/Unary" % SVC)
    resp, info = call.with_call(b"hi", timeout=t)
    assert resp == b"echo:hi", resp
    assert ("x-served-by", "grpc-peer") in info.trailing_metadata(), info.trailing_metadata()
    big = b"z" * (3 << 20)
    assert call(big, timeout=t) == b"echo:" + big
    try:
        call(b"fail", timeout=t)
        raise AssertionError("the error status was lost")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
        assert e.details() == "bad request: fail", e.details()
    cs = channel.stream_unary("/%s/ClientStream" % SVC)
    assert cs(iter([b"a", b"b", b"c"]), timeout=t) == b"a+b+c"
    ss = channel.unary_stream("/%s/ServerStream" % SVC)
    assert list(ss(b"50", timeout=t)) == [b"part%d" % i for i in range(50)]
    bd = channel.stream_stream("/%s/Bidi" % SVC)
    msgs = [b"m%d" % i for i in range(200)]
    assert list(bd(iter(msgs), timeout=t)) == [m.upper() for m in msgs]
    print("OK", flush=True)


def unavailable(target):
    """Through a proxy whose upstream is down: UNAVAILABLE, as gRPC says."""
    channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
    try:
        channel.unary_unary("/%s/Unary" % SVC)(b"hi", timeout=20)
        raise AssertionError("the call succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
        assert "HTTP 502" in e.details(), e.details()
    print("OK", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    elif sys.argv[1] == "tls-server":
        serve(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "unavailable":
        unavailable(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
