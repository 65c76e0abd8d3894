"""Spine benchmark: the real relay, renderer, store and client against the simulator running in
its own process (so CPU and memory figures are the bridge's alone), with a recording chat sink.

    python bench/spine_bench.py            # about a minute on 2 cores

Reports, from one run:
  1. median time from an answer delta arriving to the first visible text (20 answers)
  2. CPU seconds per streamed answer
  3. platform writes per 10-second answer, and the ratio writes / snapshots received
  4. peak RSS with 500 concurrent answers
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.budget import Budgets  # noqa: E402
from bridge.models import Capabilities, ChatUser, Inbound, Rate, ThreadKey  # noqa: E402
from bridge.moveworks import ApiKeyAuth, MoveworksClient  # noqa: E402
from bridge.relay import Relay  # noqa: E402
from bridge.store import Store  # noqa: E402
from tests.spine_fakes import RecordingAdapter  # noqa: E402

ASSISTANT = "moveworks-bridge-dev"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin(url: str, path: str, body: dict) -> None:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def start_simulator() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "simulator", "--port", str(port), "--pace", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/_sim/state", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("simulator did not start")


def build(url: str, caps: Capabilities, db: str = ":memory:") -> tuple[Relay, RecordingAdapter, MoveworksClient]:
    client = MoveworksClient(url + "/rest/v1beta1", ASSISTANT, ApiKeyAuth("sim-key"))
    budgets = Budgets()
    relay = Relay(store=Store(db), client=client, per_employee=False, budgets=budgets)
    adapter = RecordingAdapter(budgets, caps)
    relay.register(adapter)
    return relay, adapter, client


def inbound(i: int, text: str, workspace: str = "W1") -> Inbound:
    user = ChatUser("rec", workspace, f"U{i}")
    return Inbound(delivery_id=f"bench-{time.monotonic_ns()}-{i}", thread=ThreadKey("rec", workspace, f"C{i}", "1.0"),
                   user=user, text=text)


async def first_text_latency(url: str, *, shared_workspace: bool) -> tuple[float, float]:
    """20 answers one after another, each in its own workspace, or all in one workspace (whose
    shared write budget, 50 a minute, they then drain: the first words may wait for a token)."""
    caps = Capabilities(max_text_len=3500, min_edit_interval=1.0, write_budget=Rate(50, 60))
    relay, _, client = build(url, caps)
    seen: list[float] = []
    relay.observe_first_text(lambda platform, seconds: seen.append(seconds))
    cpu0 = time.process_time()
    for i in range(20):
        workspace = "W1" if shared_workspace else f"L{i}"
        await relay.handle(inbound(i, "How do I reset my password?", workspace))
    cpu = (time.process_time() - cpu0) / 20
    await client.aclose()
    return statistics.median(seen), cpu


async def writes_per_ten_second_answer(url: str) -> tuple[int, int]:
    caps = Capabilities(max_text_len=3500, min_edit_interval=1.0, write_budget=Rate(50, 60))
    relay, adapter, client = build(url, caps)
    chunks = 100
    admin(url, "/_sim/answers", {"text": "word " * 400, "match": "ten seconds", "chunks": chunks, "delay": 0.1})
    t0 = time.monotonic()
    await relay.handle(inbound(0, "a ten seconds answer"))
    elapsed = time.monotonic() - t0
    writes = sum(1 for p in adapter.threads.values() for c in p.calls if c[1] in ("post", "edit"))
    await client.aclose()
    print(f"   (the scripted answer streamed for {elapsed:.1f} s)")
    return writes, chunks


async def concurrent_rss(url: str, n: int = 500) -> tuple[float, float, int]:
    caps = Capabilities(max_text_len=3500, min_edit_interval=1.0, write_budget=None)
    relay, adapter, client = build(url, caps)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.monotonic()
    await asyncio.gather(*(relay.handle(inbound(i, "How do I reset my password?", f"W{i}")) for i in range(n)))
    elapsed = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    answered = sum(1 for p in adapter.threads.values() for m in p.messages.values() if m.answer is not None)
    await client.aclose()
    return rss0, rss, answered if elapsed else 0


async def main() -> None:
    proc, url = start_simulator()
    try:
        median, cpu = await first_text_latency(url, shared_workspace=False)
        shared, _ = await first_text_latency(url, shared_workspace=True)
        print(f"1. median first answer delta -> first visible text: {median * 1000:.2f} ms "
              f"(20 answers; {shared * 1000:.0f} ms when all 20 share one workspace's write budget)")
        print(f"2. CPU per streamed answer (bridge process only): {cpu * 1000:.1f} ms")
        writes, snapshots = await writes_per_ten_second_answer(url)
        print(f"3. platform writes per 10-second answer: {writes} "
              f"({writes / snapshots:.2f} writes per snapshot received, {snapshots} snapshots)")
        rss0, rss, answered = await concurrent_rss(url)
        print(f"4. peak RSS with 500 concurrent answers: {rss:.0f} MiB (baseline {rss0:.0f} MiB, "
              f"ratio {rss / rss0:.2f}); {answered}/500 answers final")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main())
