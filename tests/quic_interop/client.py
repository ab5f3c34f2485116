#!/usr/bin/env python3
"""A kefu visitor written from docs/protocol.md ("QUIC") with aioquic, another QUIC stack.

It connects with ALPN "kefu/1", checks the server certificate's SHA-256 pin, opens the control
stream, sends hello, sends one message, waits for its ack on the conversation's stream, then waits
for the agent's reply and prints it as "received: TEXT". Exit status 0 means the exchange worked.
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import struct
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamDataReceived


class KefuProtocol(QuicConnectionProtocol):
    """Splits every stream into length-prefixed frames: 4 bytes big-endian length, then JSON."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.buffers = {}
        self.frames = asyncio.Queue()
        self.peer_certificate_der = None

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            certificate = getattr(self._quic.tls, "_peer_certificate", None)
            if certificate is not None:
                from cryptography.hazmat.primitives.serialization import Encoding

                self.peer_certificate_der = certificate.public_bytes(Encoding.DER)
        elif isinstance(event, StreamDataReceived):
            buffer = self.buffers.get(event.stream_id, b"") + event.data
            while len(buffer) >= 4:
                (length,) = struct.unpack(">I", buffer[:4])
                if len(buffer) < 4 + length:
                    break
                self.frames.put_nowait((event.stream_id, json.loads(buffer[4 : 4 + length])))
                buffer = buffer[4 + length :]
            self.buffers[event.stream_id] = buffer
        elif isinstance(event, ConnectionTerminated):
            self.frames.put_nowait((None, {"type": "closed", "code": event.error_code, "reason": event.reason_phrase}))

    def send_frame(self, stream_id, frame):
        data = json.dumps(frame).encode()
        self._quic.send_stream_data(stream_id, struct.pack(">I", len(data)) + data)
        self.transmit()

    async def expect(self, kind):
        while True:
            stream_id, frame = await self.frames.get()
            print(f"stream {stream_id}: {json.dumps(frame, ensure_ascii=False)}", flush=True)
            if frame["type"] == "closed":
                raise SystemExit(f"the server closed the connection: {frame}")
            if frame["type"] == kind:
                return stream_id, frame


async def run(args):
    configuration = QuicConfiguration(is_client=True, alpn_protocols=["kefu/1"], server_name="localhost")
    # kefu's certificate is self-signed: check its fingerprint instead of a CA chain.
    configuration.verify_mode = ssl.CERT_NONE
    async with connect(args.host, args.port, configuration=configuration, create_protocol=KefuProtocol) as client:
        if args.pin:
            if client.peer_certificate_der is None:
                raise SystemExit("could not read the server certificate to check the pin")
            fingerprint = hashlib.sha256(client.peer_certificate_der).hexdigest()
            if fingerprint != args.pin.replace(":", "").lower():
                raise SystemExit(f"certificate fingerprint {fingerprint} does not match the pin")
        control = client._quic.get_next_available_stream_id(is_unidirectional=False)
        client.send_frame(control, {"type": "hello", "role": "visitor", "site": args.site, "token": args.token})
        _, welcome = await client.expect("welcome")
        assert welcome["role"] == "visitor", welcome
        client.send_frame(control, {"type": "send", "client_id": "aioquic-1", "text": "hello from aioquic"})
        stream_id, ack = await client.expect("ack")
        assert stream_id != control, "acks travel on the conversation's stream"
        assert ack["client_id"] == "aioquic-1" and ack["seq"] == 1, ack
        while True:
            stream_id, message = await client.expect("message")
            if message["sender"]["kind"] == "agent":
                break
        assert message["conversation_id"] == ack["conversation_id"], message
        print(f"received: {message['text']}", flush=True)
        client.close(error_code=1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--site", required=True)
    parser.add_argument("--token", required=True, help="a visitor token from POST /api/v1/visitor/session")
    parser.add_argument("--pin", help="the certificate's SHA-256 as printed by kefu serve")
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        sys.exit("timed out")


if __name__ == "__main__":
    main()
