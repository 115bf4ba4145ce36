"""A keep-alive HTTP/1.1 upstream that misbehaves now and then, for
benches/load/soak.sh: it answers GET with a 100-byte body, except that
FAULT_PERCENT of the requests get one of five faults, in turn: a reset in
the middle of the body, a close in the middle of the header, a body that
trickles out (1 byte per 10 ms), silence (the connection held, nothing
sent), and a body shorter than its Content-Length followed by a close.
Writes the number of faults injected to FAULTS_FILE every second.

Usage: python3 faulty_upstream.py PORT FAULT_PERCENT FAULTS_FILE
Loopback only.
"""
import asyncio
import random
import socket
import struct
import sys

PORT, PERCENT, FAULTS_FILE = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
BODY = b"x" * 99 + b"\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + BODY
faults = 0
turn = 0


async def serve(reader, writer):
    global faults, turn
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            if random.random() * 100 >= PERCENT:
                writer.write(OK)
                await writer.drain()
                continue
            faults += 1
            turn = (turn + 1) % 5
            if turn == 0:  # reset in the middle of the body
                writer.write(OK[: len(OK) - 50])
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
                return
            if turn == 1:  # close in the middle of the header
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
                await writer.drain()
                writer.close()
                return
            if turn == 2:  # trickle (well within the proxy's read timeout)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                for b in BODY:
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                continue
            if turn == 3:  # silence: held until the proxy gives up
                await reader.read()
                return
            # a body shorter than its Content-Length, then a close
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + BODY[:40])
            await writer.drain()
            writer.close()
            return
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


async def report():
    while True:
        with open(FAULTS_FILE, "w") as f:
            f.write(str(faults))
        await asyncio.sleep(1)


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT)
    asyncio.create_task(report())
    async with server:
        await server.serve_forever()


asyncio.run(main())
