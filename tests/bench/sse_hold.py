#!/usr/bin/env python3
"""Hold many concurrent SSE streams open through a proxy and measure it.

Opens --streams streaming chat completions (OpenAI SSE, `"stream":true`) at
HOST:PORT, each asking the mock upstream for an event every --delay-ms
(x-mock-token-delay-ms). Once every stream has delivered its first event it
reads the resident memory (VmRSS, summed over --pids) of the proxy, then for
--hold seconds records the gap between consecutive events on each stream,
then closes everything. Prints one JSON object:

  streams, opened, errors (connect/status failures + streams that ended early),
  rss_idle_kib, rss_streams_kib, rss_per_stream_kib,
  gap_p50_ms, gap_p99_ms, gap_p999_ms, gap_max_ms, events, open_seconds

Run it as its own process (it needs one fd per stream; raise `ulimit -n`).
"""
import argparse
import asyncio
import json
import os
import sys
import time

BODY = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}],"max_tokens":100000}'


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, int(round(p / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


class State:
    def __init__(self, n):
        self.opened = 0
        self.errors = 0
        self.error_kinds = {}
        self.done_opening = 0
        self.measuring = False
        self.stop = False
        self.gaps = []
        self.events = 0
        self.all_open = asyncio.Event()
        self.n = n

    def err(self, kind):
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def finished_opening(self):
        self.done_opening += 1
        if self.done_opening >= self.n:
            self.all_open.set()


async def stream(st, sem, args, req):
    opened_here = False
    writer = None
    try:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(args.host, args.port), args.open_timeout)
                writer.write(req)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), args.open_timeout)
                status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b"?"
                if status != b"200":
                    st.err(f"status {status.decode(errors='replace')}")
                    st.finished_opening()
                    return
                # wait for the first event
                buf = b""
                while b"data: " not in buf:
                    chunk = await asyncio.wait_for(reader.read(65536), args.open_timeout)
                    if not chunk:
                        raise ConnectionError("eof before first event")
                    buf += chunk
            except Exception as e:  # noqa: BLE001 - every failure counts as an error
                st.err(type(e).__name__)
                st.finished_opening()
                return
        st.opened += 1
        opened_here = True
        st.finished_opening()
        last = None
        loop = asyncio.get_running_loop()
        while not st.stop:
            chunk = await reader.read(65536)
            now = loop.time()
            if not chunk:
                if not st.stop:
                    st.err("ended early")
                return
            if st.measuring:
                k = chunk.count(b"data: ")
                if k:
                    st.events += k
                    if last is not None:
                        st.gaps.append((now - last) * 1000.0)
                    last = now
                    # events that arrived coalesced count as zero gaps
                    st.gaps.extend([0.0] * (k - 1))
            else:
                last = None
    except asyncio.CancelledError:
        pass
    except Exception as e:  # noqa: BLE001
        if opened_here and not st.stop:
            st.err(type(e).__name__)
    finally:
        if writer is not None:
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--delay-ms", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=10.0)
    ap.add_argument("--pids", default="")
    ap.add_argument("--concurrency", type=int, default=200, help="streams being opened at once")
    ap.add_argument("--open-timeout", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between last open and RSS read")
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
           b"Accept: text/event-stream\r\nx-mock-tokens: 100000\r\n"
           + f"x-mock-token-delay-ms: {args.delay_ms}\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
           + BODY)
    st = State(args.streams)
    rss_idle = rss_kib(pids)
    sem = asyncio.Semaphore(args.concurrency)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(stream(st, sem, args, req)) for _ in range(args.streams)]
    try:
        await asyncio.wait_for(st.all_open.wait(), args.open_timeout * 3)
    except asyncio.TimeoutError:
        pass
    open_s = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    rss1 = rss_kib(pids)
    st.measuring = True
    await asyncio.sleep(args.hold)
    st.measuring = False
    rss2 = rss_kib(pids)
    st.stop = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    rss_streams = max(rss1, rss2)
    gaps = sorted(st.gaps)
    out = {
        "streams": args.streams, "opened": st.opened, "errors": st.errors, "error_kinds": st.error_kinds,
        "rss_idle_kib": rss_idle, "rss_streams_kib": rss_streams,
        "rss_per_stream_kib": ((rss_streams - rss_idle) / st.opened) if (pids and st.opened) else None,
        "gap_p50_ms": pct(gaps, 50), "gap_p99_ms": pct(gaps, 99), "gap_p999_ms": pct(gaps, 99.9),
        "gap_max_ms": gaps[-1] if gaps else None, "events": st.events, "open_seconds": round(open_s, 2),
        "delay_ms": args.delay_ms,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except Exception:  # noqa: BLE001
        pass
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
