"""A SASL front for a broker that cannot log anyone in (Tansu 0.6.0): a stand-in for a managed Kafka's login.

Per client connection it speaks Kafka's SASL exchange itself, as a broker does: ApiVersions (answered from
the broker's own list, with SaslHandshake v1 and SaslAuthenticate v0-1 in it), SaslHandshake (API key 17)
and SaslAuthenticate (API key 36) for PLAIN and SCRAM-SHA-256/512 (RFC 5802, the server side from the
``scramp`` library). Any other request before a successful login closes the connection, as Kafka does. After
the login the bytes pass through unchanged to the broker, which advertises this front's port.

    python tests/integration/sasl_front.py --port 9093 --upstream 127.0.0.1:9092 --user alice:secret
"""

from __future__ import annotations

import argparse
import base64
import asyncio
import hmac
import struct
import sys

from scramp import ScramMechanism

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, UNSUPPORTED_VERSION, SASL_AUTHENTICATION_FAILED = 33, 35, 58
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")


class Login:
    """The users one front accepts, and a login in progress on one connection."""

    def __init__(self, users: dict[str, str], mechanisms: list[str], impostor: bool = False) -> None:
        self.users = users
        self.mechanisms = mechanisms
        #: accept any SCRAM proof and answer with a server signature made without the password (a fake broker)
        self.impostor = impostor
        self._scram_info = {
            name: {user: ScramMechanism(name).make_auth_info(pw, iteration_count=4096) for user, pw in users.items()}
            for name in mechanisms if name in SCRAM
        }

    def scram_server(self, mechanism: str):  # type: ignore[no-untyped-def]
        info = self._scram_info[mechanism]
        return ScramMechanism(mechanism).make_server(lambda user: info[user])

    def plain_ok(self, message: bytes) -> bool:
        try:
            _authzid, user, password = message.decode().split("\0")
        except ValueError:
            return False
        expected = self.users.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def parse_header(payload: bytes) -> tuple[int, int, int, bytes]:
    """(api key, version, correlation id, body) of a request with header v1 (every API used before login)."""
    api_key, version, correlation = struct.unpack(">hhi", payload[:8])
    (client_id_len,) = struct.unpack(">h", payload[8:10])
    return api_key, version, correlation, payload[10 + max(client_id_len, 0):]


def api_versions_with_sasl(body: bytes) -> bytes:
    """The broker's ApiVersions v0-2 response body with the SASL APIs this front implements put in."""
    error, count = struct.unpack(">hi", body[:6])
    entries = {}
    pos = 6
    for _ in range(count):
        key, low, high = struct.unpack(">hhh", body[pos:pos + 6])
        entries[key] = (low, high)
        pos += 6
    entries[SASL_HANDSHAKE] = (1, 1)
    entries[SASL_AUTHENTICATE] = (0, 1)
    listed = b"".join(struct.pack(">hhh", key, low, high) for key, (low, high) in sorted(entries.items()))
    return struct.pack(">hi", error, len(entries)) + listed + body[pos:]


async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, login: Login,
                 upstream: tuple[str, int]) -> None:
    broker_r, broker_w = await asyncio.open_connection(*upstream)
    try:
        if await authenticate(client_r, client_w, broker_r, broker_w, login):
            await asyncio.gather(pipe(client_r, broker_w), pipe(broker_r, client_w))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        for writer in (client_w, broker_w):
            writer.close()


async def authenticate(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                       broker_r: asyncio.StreamReader, broker_w: asyncio.StreamWriter, login: Login) -> bool:
    """Run the exchange up to a login; False (connection to close) on a refusal or any other request."""
    mechanism: str | None = None
    scram = None
    while True:
        api_key, version, correlation, body = parse_header(await read_frame(client_r))
        reply = struct.pack(">i", correlation)
        if api_key == API_VERSIONS:
            if version > 2:  # flexible versions: ask for v0, as a broker does
                client_w.write(frame(reply + struct.pack(">hihhh", UNSUPPORTED_VERSION, 1, API_VERSIONS, 0, 2)))
                continue
            broker_w.write(frame(struct.pack(">hhi", API_VERSIONS, version, correlation) + string("sasl-front")))
            answer = await read_frame(broker_r)
            client_w.write(frame(reply + api_versions_with_sasl(answer[4:])))
        elif api_key == SASL_HANDSHAKE and version == 1 and mechanism is None:
            (length,) = struct.unpack(">h", body[:2])
            wanted = body[2:2 + length].decode()
            enabled = b"".join(string(m) for m in login.mechanisms)
            known = wanted in login.mechanisms
            client_w.write(frame(reply + struct.pack(">hi", 0 if known else UNSUPPORTED_SASL_MECHANISM,
                                                     len(login.mechanisms)) + enabled))
            if not known:
                await client_w.drain()
                return False
            mechanism = wanted
            scram = login.scram_server(mechanism) if mechanism in SCRAM else None
        elif api_key == SASL_AUTHENTICATE and mechanism is not None:
            (length,) = struct.unpack(">i", body[:4])
            message = body[4:4 + length]
            ok, answer, done = step(mechanism, scram, message, login)
            lifetime = struct.pack(">q", 0) if version >= 1 else b""
            if ok:
                client_w.write(frame(reply + struct.pack(">h", 0) + string(None)
                                     + struct.pack(">i", len(answer)) + answer + lifetime))
                if done:
                    await client_w.drain()
                    return True
            else:
                error = ("Authentication failed during authentication due to invalid credentials with SASL "
                         f"mechanism {mechanism}")
                client_w.write(frame(reply + struct.pack(">h", SASL_AUTHENTICATION_FAILED) + string(error)
                                     + struct.pack(">i", 0) + lifetime))
                await client_w.drain()
                return False
        else:  # anything else before a login: refused by closing, as Kafka does
            return False
        await client_w.drain()


def step(mechanism: str, scram, message: bytes, login: Login) -> tuple[bool, bytes, bool]:  # type: ignore[no-untyped-def]
    """(accepted, bytes for the client, login complete) for one SaslAuthenticate message."""
    if mechanism == "PLAIN":
        return login.plain_ok(message), b"", True
    try:
        if scram.stage is None:
            scram.set_client_first(message.decode())
            return True, scram.get_server_first().encode(), False
        if login.impostor:
            return True, b"v=" + base64.b64encode(bytes(64)), True
        scram.set_client_final(message.decode())
        return True, scram.get_server_final().encode(), True
    except Exception:  # unknown user, wrong proof, malformed message: all a refused login
        return False, b"", True


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def serve(port: int, upstream: tuple[str, int], login: Login) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, login, upstream), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the broker")
    parser.add_argument("--user", action="append", required=True, help="NAME:PASSWORD (repeat)")
    parser.add_argument("--mechanisms", default="PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")
    parser.add_argument("--impostor", action="store_true", help="a broker that does not know the passwords")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    users = dict(user.split(":", 1) for user in args.user)
    asyncio.run(serve(args.port, (host, int(port)), Login(users, args.mechanisms.split(","), args.impostor)))


if __name__ == "__main__":
    main(sys.argv[1:])
