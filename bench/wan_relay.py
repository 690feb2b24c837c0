#!/usr/bin/env python3
"""The counted cloud link of bench/wan.sh: a byte-counting TCP relay in front of the fake
apiserver. Every byte either way on the TCP stream (TLS records, handshakes included) is
added to totals; nothing is parsed or changed.

    wan_relay.py --listen PORT --upstream HOST:PORT --control PORT

A connection to the control port (127.0.0.1) gets one JSON line and is closed:
{"received": bytes cloud->client, "sent": bytes client->cloud, "connections": accepted,
"open": still open}. "received" and "sent" are as seen from the edge, like
lite_apiserver_upstream_bytes_total{direction=...}.
"""

import argparse
import asyncio
import json

READ_SIZE = 64 * 1024


class Totals:
    def __init__(self):
        self.received = 0
        self.sent = 0
        self.connections = 0
        self.open = 0

    def as_json(self):
        return json.dumps(
            {
                "received": self.received,
                "sent": self.sent,
                "connections": self.connections,
                "open": self.open,
            }
        )


async def pump(reader, writer, count):
    """Copies until EOF, counting; half-closes the other side at the end."""
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            count(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            pass


def adder(totals, field):
    def count(n):
        setattr(totals, field, getattr(totals, field) + n)

    return count


async def relay(totals, upstream, client_reader, client_writer):
    totals.connections += 1
    totals.open += 1
    host, port = upstream
    try:
        cloud_reader, cloud_writer = await asyncio.open_connection(host, port)
    except OSError:
        totals.open -= 1
        client_writer.close()
        return
    try:
        await asyncio.gather(
            pump(client_reader, cloud_writer, adder(totals, "sent")),
            pump(cloud_reader, client_writer, adder(totals, "received")),
        )
    finally:
        totals.open -= 1
        for writer in (client_writer, cloud_writer):
            writer.close()


async def control(totals, _reader, writer):
    writer.write((totals.as_json() + "\n").encode())
    await writer.drain()
    writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the fake apiserver")
    parser.add_argument("--control", type=int, required=True)
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    totals = Totals()
    link = await asyncio.start_server(
        lambda r, w: relay(totals, (host, int(port)), r, w), "127.0.0.1", args.listen
    )
    ctl = await asyncio.start_server(lambda r, w: control(totals, r, w), "127.0.0.1", args.control)
    async with link, ctl:
        await asyncio.gather(link.serve_forever(), ctl.serve_forever())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
