#!/usr/bin/env python3
"""A WebSocket echo server on 127.0.0.1, Python's standard library only.

    python3 image/ws_echo.py PORT

The upstream for scripts/image.sh's end-to-end check (CI cannot count on the
tests crate's echo-upstream binary being built, nor on PyPI packages). Echoes
text and binary frames as they came (fragments too), answers pings, and
answers a Close with the same code. Prints "listening" once it accepts.
"""

import asyncio
import base64
import hashlib
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def read_frame(reader):
    head = await reader.readexactly(2)
    fin_op, mask_len = head
    length = mask_len & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if mask_len & 0x80 else b""
    payload = await reader.readexactly(length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return fin_op, payload


def frame(fin_op, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", fin_op, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", fin_op, 126, n)
    else:
        head = struct.pack("!BBQ", fin_op, 127, n)
    return head + payload


async def serve(reader, writer):
    try:
        request = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in request.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        while True:
            fin_op, payload = await read_frame(reader)
            opcode = fin_op & 0x0F
            if opcode == 0x9:  # ping
                writer.write(frame(0x8A, payload))
            elif opcode == 0xA:  # pong
                pass
            elif opcode == 0x8:  # close: answer with the same code
                writer.write(frame(0x88, payload[:2]))
                await writer.drain()
                break
            else:  # text, binary, continuation: echo as it came
                writer.write(frame(fin_op, payload))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
