"""Microsoft's own local Teams client, the M365 Agents Playground, against a real
`moveworks-bridge serve` (Teams unauthenticated, as README "4. Local testing without Azure") and
the bundled Moveworks simulator.

The playground (npm `@microsoft/m365agentsplayground`, pinned in tests/playground/package.json)
stands in for the Teams client and the Bot Connector service: it POSTs activities to
`/api/messages`, takes the bot's replies on its `/_connector` and checks them as Teams does. Its
web UI runs in Debian's headless Chromium, driven by Playwright. What is asserted is what a person
sees on that page (the DOM, recorded on every change by a MutationObserver), plus what the page is
fed: the conversation stream it renders and the playground's log of every call the bot made with
the status it got.

Scenarios run once per module, in order: the welcome card the install brings, a personal-chat
question (progress line, growing answer, citations, buttons, 👍/👎), 👎 with a comment, an action
button, an answer with a table, a group chat and a channel (with a follow-up in the reply chain).
What the playground (0.2.28) cannot show is not tested here: a welcome button pressed (it sends
nothing for an Adaptive Card `Action.Submit` whose data is `msteams.imBack`, which Teams posts as
the person's message; tests/test_teams_welcome.py presses it as Teams does) and prompt starters
(it reads no app manifest). Each test asserts one claim on what was
observed. Two things are sent through the playground's own "Mock an Activity" API instead of its
UI, where the UI cannot do what Teams does: a 👎 that names the rated message, and messages that
do not mention the bot (which Teams delivers to bots with resource-specific consent). The bot's
connector calls take 0.3 s (`ConnectorLatency`), which keeps the page from losing replies.

Screenshots, the observations as JSON and all logs go to the directory named in every failure
message (`PLAYGROUND_ARTIFACTS=<dir>` chooses it). Needs `npm ci --prefix tests/playground`,
Debian's `chromium` and the `playwright` package (.ci/run installs all three); a missing one fails
the test and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bridge import texts
from bridge.process.config import DEFAULT_SUGGESTED_PROMPTS
from bridge.simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parent.parent
PLAYGROUND_CLI = ROOT / "tests/playground/node_modules/@microsoft/m365agentsplayground/cli.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
ASSISTANT = "moveworks-bridge-dev"
BOT = "Test Bot"  # the playground's name for the bot under test
INSTALL_HINT = ("run .ci/run, or: npm ci --prefix tests/playground && apt-get install -y chromium && "
                "pip install -e '.[dev]'")

# Streaming limits the README promises: personal chats update at most once a second, channels and
# group chats every 1.5 s; anything standing still much longer than that while Moveworks is
# still writing is a frozen answer.
LONGEST_STILL = 2.6

# --- what the simulated assistant answers (tags in the questions pick the script) ---------------

PERSONAL_TEXT = (
    "Your **VPN access** is valid until *31 March*, and it renews by itself when you sign in.{c1}\n\n"
    "If it lapses, request a renewal in the access portal; approval usually takes one business day."
    "{c2}\n\nYou can also ask me to start the renewal now."
)
PERSONAL_REASONING = ["Checking your VPN entitlement"]
PERSONAL_ACTIONS = [
    {"type": "CALLBACK_ACTION", "label": "Renew VPN access"},
    {"type": "URL_ACTION", "label": "Open access portal", "url": "https://access.example.com"},
]
TABLE_TEXT = (
    "## Build farm access levels\n\n"
    "There are three levels of access to the build farm, and each one adds to the one before it.\n\n"
    "| Level | What it allows |\n"
    "|---|---|\n"
    "| Viewer | See builds and their logs |\n"
    "| Runner | Start and cancel builds |\n"
    "| Admin | Change pipelines and secrets |\n\n"
    "Runner is what most engineers need. Ask your team lead to approve it in the access portal, and "
    "**it is granted within an hour of the approval**, after which you can start builds right away. Admin "
    "access needs a second approval from the platform team and is reviewed every quarter."
)
GROUP_TEXT = (
    "**Your laptop refresh is due in June: pick a model from the standard catalog before the end of "
    "May so that it ships in time.**{c1}\n\n"
    "Delivery takes about five business days, and the old device goes back within two weeks.{c2}"
)
GROUP_ACTIONS = [
    {"type": "CALLBACK_ACTION", "label": "Order a new laptop"},
    {"type": "URL_ACTION", "label": "Browse the catalog", "url": "https://it.example.com/catalog"},
]
CHANNEL_TEXT = (
    "**Build farm access is granted by your team lead, who approves the request in the access "
    "portal.**{c1}\n\nOpen the portal, choose *Build farm*, pick the Runner level and submit.{c2}"
)
CHANNEL_FOLLOWUP_TEXT = "Approval usually takes **less than an hour** during working hours."
CHANNEL_ACTIONS = [
    {"type": "CALLBACK_ACTION", "label": "Request build farm access"},
    {"type": "URL_ACTION", "label": "Open access portal", "url": "https://access.example.com"},
]
COMMENT = "The renewal link in this answer is out of date."

Pick = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]  # chooses one answer's messages among those shown


def with_citations(marked: str, sources: list[tuple[str, str]]) -> tuple[str, list[dict[str, Any]], str]:
    """(Moveworks text, simulator citations with offsets, the final text users should see).

    `{cN}` marks where citation N belongs; users see it as the `[N]` marker Teams turns into a
    numbered citation."""
    text, cites, pos = marked, [], 0
    for n in range(1, len(sources) + 1):
        pos = text.index(f"{{c{n}}}")
        text = text.replace(f"{{c{n}}}", "", 1)
        cites.append({"title": sources[n - 1][0], "url": sources[n - 1][1], "offset": pos})
    final = marked
    for n in range(1, len(sources) + 1):
        final = final.replace(f"{{c{n}}}", f"[{n}]")
    return text, cites, final


def plain(markdown: str) -> str:
    """The words a reader sees of simple Markdown (emphasis and citation markers dropped)."""
    text = re.sub(r"\[\d+\]", "", markdown)
    text = re.sub(r"\*\*|\*|`", "", text)
    return " ".join(text.split())


# --- the processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fail_setup(what: str) -> NoReturn:
    pytest.fail(f"{what}: {INSTALL_HINT}", pytrace=False)


def _spawn_serve(sim: Simulator, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`moveworks-bridge serve` as the README's local testing runs it: Teams only, no app id."""
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "MOVEWORKS_", "SLACK_", "TEAMS_"))}
    env = {
        **keep,
        "PORT": str(port),
        "BRIDGE_DB": str(workdir / "bridge.db"),
        "BRIDGE_ADAPTERS": "teams",  # and no TEAMS_APP_ID: unauthenticated
        "BRIDGE_POLLER": "off",
        "BRIDGE_SHUTDOWN_GRACE": "3",
        "MOVEWORKS_BASE_URL": sim.base_url,
        "MOVEWORKS_ASSISTANT_NAME": ASSISTANT,
        "MOVEWORKS_API_KEY": "sim-key",
    }
    with open(workdir / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


class ConnectorLatency:
    """The bot's calls to the playground's connector (`/_connector`), forwarded after a short
    delay, as the real Bot Connector service takes a moment to answer.

    Without it the playground's page loses, now and then, a bot reply that reaches the playground
    before the page has the answer to its own POST of the user's message (a race in its page; the
    bot's calls all succeed and the playground's log shows them)."""

    DELAY = 0.3

    def __init__(self) -> None:
        self.target = ""  # the playground's URL, known once it listens
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.session = aiohttp.ClientSession()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self.url

    async def forward(self, request: web.Request) -> web.Response:
        assert self.session is not None and self.target
        await asyncio.sleep(self.DELAY)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with self.session.request(request.method, self.target + request.rel_url.path_qs,
                                        data=await request.read(), headers=headers) as resp:
            return web.Response(status=resp.status, body=await resp.read(),
                                content_type=resp.content_type if resp.content_length != 0 else None)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()


def _spawn_playground(bot_url: str, connector_url: str, workdir: Path) -> subprocess.Popen[bytes]:
    """The playground, talking to `bot_url` as a Teams client (`--channel-id msteams`), with
    `connector_url` as the service URL its activities give the bot."""
    node = shutil.which("node")
    if node is None or not PLAYGROUND_CLI.exists():
        _fail_setup("the M365 Agents Playground is not installed (tests/playground/node_modules)")
    env = {
        **os.environ,
        "TEAMSAPPTESTER_BROWSER": "none",  # it would otherwise try to open a browser itself
        "M365_AGENTS_PLAYGROUND_LOGFILE": str(workdir / "playground.log"),  # not ./devTools/
    }
    with open(workdir / "playground.out", "wb") as out:
        return subprocess.Popen(
            [node, str(PLAYGROUND_CLI), "--app-endpoint", bot_url + "/api/messages", "--channel-id", "msteams",
             "--port", str(free_port()), "--service-url", connector_url + "/_connector", "--disable-telemetry"],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


async def _serve_ready(proc: subprocess.Popen[bytes], url: str, session: aiohttp.ClientSession,
                       log: Path, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited at start-up: {_read(log)[-2000:]}")
        try:
            async with session.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"serve not ready after {timeout:.0f} s: {_read(log)[-2000:]}")
        await asyncio.sleep(0.1)


async def _playground_url(proc: subprocess.Popen[bytes], out: Path, timeout: float = 30.0) -> str:
    """The playground's URL, from the port it says it listens on (it moves off a taken one)."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"Listening on (\d+)", _read(out))
        if found:
            return f"http://127.0.0.1:{found.group(1)}"
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the playground did not start: {_read(out)[-2000:]}")
        await asyncio.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes], group: bool = False) -> None:
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        proc.kill()
        proc.wait(5)


# --- the page -----------------------------------------------------------------------------------

# Every visible bot message, read from the DOM on each change and kept with the time it changed.
# A bot message is found by the bot's avatar; its body is the element after the avatar's row.
# Citations are the numbered buttons the playground draws for `[n]` markers; card buttons are the
# Adaptive Card's actions. Channel replies also name the text of the post they are replying to.
RECORDER = r"""
(() => {
  const rec = [];
  let last = '';
  const read = () => {
    const out = [];
    for (const av of document.querySelectorAll('span[role="img"][aria-label="__BOT__"]')) {
      if (av.closest('[role="treeitem"], [role="menu"], [role="listbox"], [role="dialog"]')) continue;
      const row = av.parentElement;
      const channel = row.children.length > 1;  // a channel reply: avatar, name and label in one row
      const item = channel ? row.parentElement : row.parentElement && row.parentElement.parentElement;
      const body = row.nextElementSibling;
      if (!item || !body || body.querySelector('[contenteditable]')) continue;
      const cites = Array.from(body.querySelectorAll('a[role="button"]')).map(a => a.textContent.trim());
      const buttons = Array.from(body.querySelectorAll('button')).map(
        b => (b.getAttribute('aria-label') || b.textContent).trim());
      const clone = body.cloneNode(true);
      clone.querySelectorAll('a[role="button"], button').forEach(e => e.remove());
      // The playground draws a caret ("|") after text that is still streaming.
      const text = clone.textContent.replace(/\s+/g, ' ').trim().replace(/\s*\|$/, '');
      const labels = Array.from(item.querySelectorAll('span')).filter(
        s => s.children.length === 0 && s.textContent.trim() === 'AI generated').length;
      const post = item.closest('[role="group"]');
      const rootSpan = post ? Array.from(post.children).find(c => c.tagName === 'SPAN') : null;
      out.push({text, cites, buttons, labels,
                likes: item.querySelectorAll('button[aria-label="Like"]').length,
                dislikes: item.querySelectorAll('button[aria-label="Dislike"]').length,
                post: rootSpan ? rootSpan.textContent.replace(/\s+/g, ' ').trim() : null});
    }
    return out;
  };
  const snap = () => {
    const items = read();
    const key = JSON.stringify(items);
    if (key !== last) { last = key; rec.push({t: Date.now() / 1000, items}); }
  };
  window.__pgRead = read;
  window.__pgRec = rec;
  const start = () => new MutationObserver(snap).observe(document.body,
    {subtree: true, childList: true, characterData: true});
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
""".replace("__BOT__", BOT)


@dataclass
class Seen:
    """One bot message as a person saw it at one moment."""

    t: float  # wall clock (time.time())
    text: str
    cites: list[str]
    buttons: list[str]
    labels: int
    likes: int
    dislikes: int
    post: str | None


@dataclass
class Answer:
    """Everything observed about one question and its answer."""

    question: str
    asked_at: float  # wall clock
    items: list[Seen] = field(default_factory=list)  # the answer's messages as finally shown
    history: list[Seen] = field(default_factory=list)  # every state of its first message, in order
    frames: list[dict[str, Any]] = field(default_factory=list)  # conversation-stream messages
    calls: list[dict[str, Any]] = field(default_factory=list)  # the bot's calls the playground logged
    inbound: dict[str, Any] = field(default_factory=dict)  # the question's activity as sent to the bot
    shots: list[str] = field(default_factory=list)

    def dump(self, path: Path) -> None:
        """Keep what was observed next to the screenshots."""
        path.write_text(json.dumps({
            "question": self.question, "asked_at": self.asked_at,
            "items": [s.__dict__ for s in self.items], "history": [s.__dict__ for s in self.history],
            "frames": self.frames, "calls": self.calls, "inbound": self.inbound}, indent=1, default=str))

    @property
    def final(self) -> Seen | None:
        return self.items[0] if self.items else None

    def errors(self) -> list[str]:
        return [f"{c['activityName']} {c['response'].get('statusCode')} {json.dumps(c['response'].get('body'))[:300]}"
                for c in self.calls if int(c.get("response", {}).get("statusCode") or 0) >= 400]


class Playground:
    """The playground's web UI in headless Chromium, plus what its two websockets carry."""

    def __init__(self, page: Any, url: str, serve_url: str, artifacts: Path, session: aiohttp.ClientSession) -> None:
        self.page = page
        self.url = url
        self.serve_url = serve_url
        self.session = session
        self.artifacts = artifacts
        self.frames: list[dict[str, Any]] = []  # conversation stream: what the page renders
        self.logs: list[dict[str, Any]] = []  # log stream: every activity and its HTTP status
        self.answers_done = 0
        self.shot_no = 0

    def on_websocket(self, ws: Any) -> None:
        def received(payload: str | bytes) -> None:
            try:
                data = json.loads(payload)
            except (TypeError, ValueError):
                return
            data["_at"] = time.time()
            if data.get("logAction") == "appendLog" and isinstance(data.get("log"), dict):
                self.logs.append(data["log"])
            elif "action" in data:
                self.frames.append(data)
        ws.on("framereceived", received)

    def keep(self) -> None:
        """Write what the websockets carried next to the screenshots."""
        (self.artifacts / "conversation-frames.jsonl").write_text("\n".join(json.dumps(f) for f in self.frames))
        (self.artifacts / "playground-log.jsonl").write_text("\n".join(json.dumps(f) for f in self.logs))

    async def shot(self, name: str) -> str:
        self.shot_no += 1
        path = self.artifacts / f"{self.shot_no:02d}-{name}.png"
        await self.page.screenshot(path=str(path))
        return str(path)

    async def open(self, label: str) -> None:
        await self.page.get_by_role("treeitem", name=label).click()
        await asyncio.sleep(0.3)

    async def type_message(self, editor: Any, text: str, *, mention: bool) -> None:
        await editor.click()
        if mention:
            await self.page.keyboard.type("@")
            await self.page.locator('[role="menuitem"]', has_text=BOT).first.click()
            await self.page.keyboard.type(" ")
        await self.page.keyboard.type(text)

    async def send_chat(self, text: str, *, mention: bool = False) -> None:
        editor = self.page.locator("[data-lexical-editor=true]").last
        await self.type_message(editor, text, mention=mention)
        await self.page.keyboard.press("Enter")

    async def new_post(self, text: str, *, mention: bool = False) -> None:
        editor = self.page.locator("[data-lexical-editor=true]").first  # "Start a new post"
        await self.type_message(editor, text, mention=mention)
        await self.page.get_by_role("button", name="Post", exact=True).click()

    async def reply_in_chain(self, post_text: str, text: str, *, mention: bool = False) -> None:
        post = self.page.locator('[role="group"]', has_text=post_text).first
        editor = post.locator("[data-lexical-editor=true]").first
        await self.type_message(editor, text, mention=mention)
        await self.page.keyboard.press("Enter")

    async def current(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("window.__pgRead()"))

    async def records(self, since: float) -> list[dict[str, Any]]:
        return [r for r in await self.page.evaluate("window.__pgRec") if r["t"] >= since]

    async def metric(self, name: str) -> float:
        async with self.session.get(self.serve_url + "/metrics") as resp:
            text = await resp.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and line[len(name)] in " {")

    async def answered(self, n: int = 1, timeout: float = 25.0, *,
                       partial: Pick | None = None,
                       shot: str = "") -> list[str]:
        """Wait until the bridge has finished `n` more answers, then until the page is still.

        With `partial`, screenshot the first moment that answer shows part of its text (not a
        status line, not yet final): the evidence of what a growing answer looks like."""
        want = self.answers_done + n
        deadline = time.monotonic() + timeout
        shots: list[str] = []
        while True:
            if partial is not None and not shots:
                items = partial(await self.current())
                if items and len(items[0]["text"]) > 20 and not items[0]["text"].endswith("…"):
                    shots.append(await self.shot(f"{shot}-growing"))
            done = await self.metric("bridge_answers_total")
            if done >= want and await self.metric("bridge_active_answers") == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the bridge finished {done:.0f} of {want} answers after {timeout:.0f} s; "
                                     f"evidence in {self.artifacts}")
            await asyncio.sleep(0.1)
        self.answers_done = want
        await self.settle()
        return shots

    async def settle(self, quiet: float = 0.6, timeout: float = 6.0) -> None:
        """Until the page has not changed for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = await self.page.evaluate("window.__pgRec.length ? window.__pgRec[window.__pgRec.length-1].t : 0")
            if time.time() - recs >= quiet:
                return
            await asyncio.sleep(0.2)

    async def mock_activity(self, conversation_id: str, **fields: Any) -> float:
        """Send the bot an activity through the playground's own "Mock an Activity" API (its
        template fills in the conversation, the user and the service URL). Returns when it was sent."""
        async with self.session.get(self.url + "/_internal/v1/customActivities/template",
                                    params={"conversationId": conversation_id}) as resp:
            activity = await resp.json()
        activity.update(fields)
        sent_at = time.time()
        async with self.session.post(self.url + "/_internal/v1/customActivities", json=activity) as resp:
            assert resp.status == 200, await resp.text()
        return sent_at

    def invokes(self, since: float) -> list[dict[str, Any]]:
        """The invoke activities the playground sent the bot since `since` (wall clock)."""
        return [c for c in self.logs
                if c.get("activityName") == "invoke" and c.get("timestamp", 0) / 1000 >= since - 0.5]

    def inbound(self, tag: str) -> dict[str, Any]:
        for log in self.logs:
            body = (log.get("request") or {}).get("body") or {}
            if log.get("activityName") == "message" and log.get("from") != "User Application" \
                    and tag in (body.get("text") or ""):
                return body
        return {}

    async def observe(self, question: str, tag: str, asked_at: float,
                      pick: Pick) -> Answer:
        """The answer to `question` (whose activity carries `tag`): `pick` chooses its messages
        among the bot messages shown."""
        answer = Answer(question=question, asked_at=asked_at)
        now = await self.current()
        answer.items = [Seen(t=time.time(), **m) for m in pick(now)]
        if answer.items:
            # Every state of its first message, from the snapshots recorded since the question.
            for rec in await self.records(asked_at):
                chosen = pick(rec["items"])
                if chosen:
                    seen = Seen(t=rec["t"], **chosen[0])
                    if not answer.history or answer.history[-1].text != seen.text \
                            or answer.history[-1].buttons != seen.buttons:
                        answer.history.append(seen)
        answer.inbound = self.inbound(tag)
        conv = (answer.inbound.get("conversation") or {}).get("id")
        bot_id = (answer.inbound.get("recipient") or {}).get("id")
        answer.calls = [c for c in self.logs if c.get("from") == "User Application"
                        and c.get("conversationId") == conv and c.get("timestamp", 0) / 1000 >= asked_at - 0.5]
        answer.frames = [f for f in self.frames if f.get("actionConversationId") == conv
                         and f.get("_at", 0) >= asked_at and isinstance(f.get("message"), dict)
                         and (f["message"].get("from") or {}).get("id") == bot_id]
        return answer


# --- fixtures -------------------------------------------------------------------------------------


@dataclass
class Stack:
    pg: Playground
    sim: Simulator
    artifacts: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _fail_setup("the Python package playwright is missing")
    if not os.access(CHROMIUM, os.X_OK):
        _fail_setup(f"{CHROMIUM} is missing")
    chosen = os.environ.get("PLAYGROUND_ARTIFACTS")
    artifacts = Path(chosen) if chosen else tmp_path_factory.mktemp("playground")
    artifacts.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pg-run-"))
    sim = Simulator(SimulatorConfig(assistant_name=ASSISTANT, pace=1.0))
    pg: Playground | None = None
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        cleanup.callback(_keep, workdir, artifacts)
        await sim.start()
        cleanup.push_async_callback(sim.stop)
        serve, serve_url = _spawn_serve(sim, workdir)
        cleanup.callback(_stop, serve)
        latency = ConnectorLatency()
        await latency.start()
        cleanup.push_async_callback(latency.stop)
        playground = _spawn_playground(serve_url, latency.url, workdir)  # it waits for the bot by itself
        cleanup.callback(_stop, playground, group=True)
        session = await cleanup.enter_async_context(aiohttp.ClientSession())
        await _serve_ready(serve, serve_url, session, workdir / "serve.log")
        pg_url = await _playground_url(playground, workdir / "playground.out")
        latency.target = pg_url
        p = await cleanup.enter_async_context(async_playwright())
        context = await p.chromium.launch_persistent_context(
            str(workdir / "chromium"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        cleanup.push_async_callback(context.close)
        page = context.pages[0] if context.pages else await context.new_page()
        # The page asks a CDN for fonts: refuse at once rather than wait on the closed network.
        await page.route(lambda url: not url.startswith(("http://127.0.0.1", "http://localhost")),
                         lambda route: route.abort())
        await page.add_init_script(RECORDER)
        pg = Playground(page, pg_url, serve_url, artifacts, session)
        cleanup.callback(pg.keep)
        page.on("websocket", pg.on_websocket)
        await page.goto(pg_url + "/", wait_until="domcontentloaded")
        await page.locator("[data-lexical-editor=true]").first.wait_for(timeout=20000)
        # The page's first load installs the app in the personal chat (installationUpdate and
        # conversationUpdate to the bot).
        await _wait(lambda: any(c.get("activityName") == "conversationUpdate" for c in pg.logs), 20)
        yield Stack(pg, sim, artifacts)


def _keep(workdir: Path, artifacts: Path) -> None:
    for name in ("serve.log", "playground.out", "playground.log"):
        if (workdir / name).exists():
            shutil.copy(workdir / name, artifacts / name)


def new_items(before: list[dict[str, Any]]) -> Pick:
    """In a chat, the bot messages after the ones already shown before the question."""
    return lambda items: items[len(before):]


def in_post(tag: str, before: list[dict[str, Any]] | None = None) -> Pick:
    """In a channel, the bot replies in the post whose text carries `tag` (after those in `before`)."""
    skip = len([m for m in before or [] if m.get("post") and tag in m["post"]])
    return lambda items: [m for m in items if m.get("post") and tag in m["post"]][skip:]


async def ask_in_chat(pg: Playground, question: str, *, mention: bool = False, shots: str = "") -> Answer:
    before = await pg.current()
    asked_at = time.time()
    await pg.send_chat(question, mention=mention)
    growing = await pg.answered(partial=new_items(before), shot=shots)
    answer = await pg.observe(question, question.split()[-1], asked_at, new_items(before))
    answer.shots = [*growing, await pg.shot(f"{shots}-final")]
    answer.dump(pg.artifacts / f"{shots}.json")
    return answer


@dataclass
class WelcomeRun:
    shown: list[dict[str, Any]]  # the bot messages in the personal chat right after the install
    installs: list[str]  # the install activities the playground sent the bot
    shots: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def welcome(stack: Stack) -> WelcomeRun:
    """The page's first load installed the app in the personal chat: the welcome card arrives."""
    pg = stack.pg
    await pg.open("Personal Chat")

    async def welcome_shown() -> list[dict[str, Any]]:
        return [m for m in await pg.current() if texts.TEAMS_WELCOME_TITLE[2:] in m["text"]]

    for _ in range(75):  # 15 s
        if await welcome_shown():
            break
        await asyncio.sleep(0.2)
    await pg.settle()
    installs = [c["activityName"] for c in pg.logs if c.get("activityName") in ("conversationUpdate",
                                                                                "installationUpdate")]
    return WelcomeRun(await pg.current(), installs, [await pg.shot("welcome")])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def personal(stack: Stack, welcome: WelcomeRun) -> Answer:
    text, cites, _ = with_citations(PERSONAL_TEXT, [("VPN access policy", "https://kb.example.com/it/vpn-access"),
                                                    ("Access renewals", "https://kb.example.com/it/renewals")])
    stack.sim.script_answer(text=text, match="[pg-personal]", reasoning=PERSONAL_REASONING, citations=cites,
                            actions=PERSONAL_ACTIONS, chunks=6, delay=0.6)
    await stack.pg.open("Personal Chat")
    return await ask_in_chat(stack.pg, "Is my VPN access still valid? [pg-personal]", shots="personal")


@dataclass
class FeedbackRun:
    clicked: list[dict[str, Any]]  # the invokes the 👎 click in the UI sent, as the bot got them
    clicked_records: list[dict[str, Any]]  # what reached Moveworks from that click
    teams_shaped: list[dict[str, Any]]  # the invoke Teams sends for the same click (see below)
    records: list[dict[str, Any]]  # what reached Moveworks in the end
    shots: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def feedback(stack: Stack, personal: Answer) -> FeedbackRun:
    """👎 with a typed comment on the personal-chat answer.

    First through the UI. The playground (0.2.28) sends that invoke without `replyToId`, so no bot
    can tell which message was rated, and it sends the comment as plain text. Teams sends
    `replyToId` (the rated message) and the comment as `{"feedbackText": ...}` JSON. So the same
    click is then sent as Teams sends it, through the playground's own custom-activity API (its
    "Mock an Activity"), to check what the bridge does with a real Teams rating."""
    pg, page, sim = stack.pg, stack.pg.page, stack.sim
    await pg.open("Personal Chat")
    answer_text = plain(PERSONAL_TEXT.replace("{c1}", "").replace("{c2}", ""))[:40]
    shown = page.locator('[aria-label="Message header"]').locator("xpath=..").filter(has_text=answer_text)
    clicked_at = time.time()
    await shown.locator('button[aria-label="Dislike"]').first.click()
    dialog = page.get_by_role("dialog")
    await dialog.locator("textarea").fill(COMMENT)
    shots = [await pg.shot("feedback-dialog")]
    await dialog.get_by_role("button", name="Submit").click()
    await _wait(lambda: pg.invokes(since=clicked_at), 10)
    await asyncio.sleep(0.3)  # the bot answered the invoke: whatever it sent Moveworks has arrived
    shots.append(await pg.shot("feedback-thanks"))
    close = dialog.get_by_role("button", name="Close")
    if await close.count():
        await close.click()
    clicked = pg.invokes(since=clicked_at)
    clicked_records = list(sim.state.feedback)

    rated = next((f["message"]["messageId"] for f in personal.frames if f["action"] == "createMessage"), None)
    sent_at = await pg.mock_activity(
        (personal.inbound.get("conversation") or {}).get("id", ""),
        type="invoke", name="message/submitAction", replyToId=rated,
        value={"actionName": "feedback",
               "actionValue": {"reaction": "dislike", "feedback": json.dumps({"feedbackText": COMMENT})}})
    await _wait(lambda: len(sim.state.feedback) > len(clicked_records), 8, fail=False)
    await _wait(lambda: pg.invokes(since=sent_at), 5, fail=False)  # its log line may come a little later
    teams_shaped = pg.invokes(since=sent_at)
    return FeedbackRun(clicked, clicked_records, teams_shaped, list(sim.state.feedback), shots)


async def _wait(condition: Callable[[], Any], timeout: float, *, fail: bool = True) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.1)
    if fail:
        raise AssertionError(f"timed out after {timeout} s")
    return None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def action(stack: Stack, feedback: FeedbackRun) -> Answer:
    """The answer's "Renew VPN access" button, pressed."""
    pg = stack.pg
    await pg.open("Personal Chat")
    before = await pg.current()
    pressed_at = time.time()
    await pg.page.get_by_role("button", name=PERSONAL_ACTIONS[0]["label"], exact=True).first.click()
    await pg.answered()
    answer = await pg.observe(PERSONAL_ACTIONS[0]["label"], "[pg-personal]", pressed_at, new_items(before))
    answer.shots = [await pg.shot("action-pressed")]
    answer.dump(pg.artifacts / "action.json")
    return answer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def table(stack: Stack, action: Answer) -> Answer:
    stack.sim.script_answer(text=TABLE_TEXT, match="[pg-table]", reasoning=["Looking up build farm access"],
                            chunks=4, delay=1.2)
    await stack.pg.open("Personal Chat")
    answer = await ask_in_chat(stack.pg, "What build farm access levels are there? [pg-table]", shots="table")
    return answer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def group(stack: Stack, table: Answer) -> Answer:
    text, cites, _ = with_citations(GROUP_TEXT, [("Hardware refresh policy", "https://kb.example.com/it/refresh"),
                                                 ("Returning a device", "https://kb.example.com/it/returns")])
    stack.sim.script_answer(text=text, match="[pg-group]", citations=cites, actions=GROUP_ACTIONS,
                            reasoning=["Checking your current device"], chunks=6, delay=0.6)
    pg = stack.pg
    await pg.open("Group Chat")
    await pg.send_chat("Does anyone know when the laptop refresh starts? [pg-group-nomention]")
    await asyncio.sleep(0.3)
    answer = await ask_in_chat(pg, "when is my laptop refresh due? [pg-group]", mention=True, shots="group")
    # The playground's UI sends a bot only the messages that @mention it (as Teams does without
    # resource-specific consent); Teams with RSC delivers the others too, and the bot must ignore them.
    await pg.mock_activity((answer.inbound.get("conversation") or {}).get("id", ""), type="message",
                           text="Thanks, I will check the catalog [pg-group-rsc-nomention]")
    await asyncio.sleep(1.0)
    return answer


@dataclass
class ChannelRun:
    first: Answer
    followup: Answer
    posts: list[dict[str, Any]]  # every bot message shown in the channel at the end


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def channel(stack: Stack, group: Answer) -> ChannelRun:
    text, cites, _ = with_citations(CHANNEL_TEXT, [("Build farm access", "https://kb.example.com/eng/build-farm"),
                                                   ("Access portal guide", "https://kb.example.com/it/portal")])
    stack.sim.script_answer(text=text, match="[pg-channel]", citations=cites, actions=CHANNEL_ACTIONS,
                            reasoning=["Looking up build farm access"], chunks=6, delay=0.6)
    stack.sim.script_answer(text=CHANNEL_FOLLOWUP_TEXT, match="[pg-channel-followup]", chunks=3, delay=0.4)
    pg = stack.pg
    await pg.open("My Team - General")
    await pg.new_post("Anyone else seeing slow builds today? [pg-channel-nomention]")
    await asyncio.sleep(0.3)
    question = "how do I get build farm access? [pg-channel]"
    asked_at = time.time()
    await pg.new_post(question, mention=True)
    growing = await pg.answered(partial=in_post("[pg-channel]"), shot="channel")
    first = await pg.observe(question, "[pg-channel]", asked_at, in_post("[pg-channel]"))
    before = await pg.current()
    first.shots = [*growing, await pg.shot("channel-final")]
    first.dump(pg.artifacts / "channel.json")
    # In the same reply chain: replies that do not mention the bot (from the UI, which does not
    # send them to the bot, and as Teams with resource-specific consent delivers them), then a
    # follow-up that does.
    await pg.reply_in_chain("[pg-channel]", "thanks, trying it now [pg-channel-chain-nomention]")
    await pg.mock_activity((first.inbound.get("conversation") or {}).get("id", ""), type="message",
                           text="Thanks, trying it now [pg-channel-rsc-nomention]")
    await asyncio.sleep(1.0)
    follow_q = "and how long does approval take? [pg-channel-followup]"
    asked_at = time.time()
    await pg.reply_in_chain("[pg-channel]", follow_q, mention=True)
    await pg.answered()
    followup = await pg.observe(follow_q, "[pg-channel-followup]", asked_at, in_post("[pg-channel]", before))
    followup.shots = [await pg.shot("channel-followup")]
    followup.dump(pg.artifacts / "channel-followup.json")
    return ChannelRun(first, followup, await pg.current())


# --- helpers for the assertions -------------------------------------------------------------------


def questions(sim: Simulator) -> list[tuple[str, str]]:
    """(Moveworks conversation id, text) of every question the simulator received."""
    found = []
    for user in sim.state.users.values():
        for message in user.messages.values():
            if message.get("actor") == "USER":
                content = message.get("content") or {}
                text = next((v.get("text") for v in content.values() if isinstance(v, dict) and "text" in v), "")
                found.append((str(message.get("conversation_id", "")), str(text)))
    return found


def evidence(stack: Stack, answer: Answer | None = None) -> str:
    shots = ", ".join(Path(s).name for s in (answer.shots if answer else []))
    return f"(evidence in {stack.artifacts}{': ' + shots if shots else ''})"


def longest_still(history: list[Seen], start: float, end: float) -> float:
    """Longest time the shown text did not change between `start` and `end` (wall clock)."""
    points = [start] + [s.t for s in history if start < s.t < end] + [end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def raw_markdown(history: list[Seen]) -> list[str]:
    """Shown texts in which Markdown markers are visible as characters."""
    return [s.text for s in history if "**" in s.text or re.search(r"(^|\s)\*\S", s.text)]


def final_text_frame(answer: Answer) -> str | None:
    """The last text the page was given for the answer's first message (the streamed or edited one)."""
    texts = [f["message"].get("text") for f in answer.frames if f["message"].get("text")]
    return texts[-1] if texts else None


def sim_timing(sim: Simulator, tag: str) -> dict[str, Any]:
    offset = time.time() - time.monotonic()
    for record in sim.timings.values():
        if tag in record["question"]:
            return {k: (v + offset if isinstance(v, float) else v) for k, v in record.items()}
    return {}


# --- the welcome ------------------------------------------------------------------------------


async def test_personal_install_shows_one_welcome_with_the_prompts_as_buttons(stack: Stack,
                                                                               welcome: WelcomeRun) -> None:
    assert {"conversationUpdate", "installationUpdate"} <= set(welcome.installs), welcome.installs
    shown = [m for m in welcome.shown if texts.TEAMS_WELCOME_TITLE[2:] in m["text"]]
    assert len(shown) == 1 and len(welcome.shown) == 1, f"one welcome for two install events {evidence(stack)}"
    assert texts.TEAMS_WELCOME in shown[0]["text"] and texts.TEAMS_WELCOME_TRY in shown[0]["text"]
    assert shown[0]["buttons"] == list(DEFAULT_SUGGESTED_PROMPTS), evidence(stack)


# --- personal chat ------------------------------------------------------------------------------


async def test_personal_chat_streams_progress_then_growing_answer(stack: Stack, personal: Answer) -> None:
    _, _, final = with_citations(PERSONAL_TEXT, [("", ""), ("", "")])
    shown = [s.text for s in personal.history]
    progress = [t for t in shown if any(step in t for step in PERSONAL_REASONING)]
    assert progress, f"no progress line with the assistant's step was shown: {shown} {evidence(stack, personal)}"
    growing = [t for t in shown if t and plain(t) != plain(final) and plain(final).startswith(plain(t).rstrip(" ."))
               and not any(step in t for step in PERSONAL_REASONING)]
    assert len(growing) >= 2, (
        f"the answer did not visibly grow while streaming (partial texts shown: {growing}) {evidence(stack, personal)}")
    kinds = [(f["message"].get("streamEntity") or {}).get("streamType") for f in personal.frames]
    assert "informative" in kinds and "streaming" in kinds and "final" in kinds, kinds


async def test_personal_chat_final_text_citations_and_actions(stack: Stack, personal: Answer) -> None:
    _, _, final = with_citations(PERSONAL_TEXT, [("", ""), ("", "")])
    assert final_text_frame(personal) == final, f"final text differs {evidence(stack, personal)}"
    assert personal.final is not None, f"no answer shown {evidence(stack, personal)}"
    assert personal.final.text == plain(final), f"shown: {personal.final.text!r} {evidence(stack, personal)}"
    assert personal.final.cites == ["1", "2"], f"citations shown: {personal.final.cites} {evidence(stack, personal)}"
    buttons = [b for item in personal.items for b in item.buttons]
    assert [a["label"] for a in PERSONAL_ACTIONS] == [b for b in buttons if b not in ("Like", "Dislike")], (
        f"action buttons shown: {buttons} {evidence(stack, personal)}")
    assert personal.errors() == [], f"the playground refused bot calls: {personal.errors()}"


async def test_personal_chat_one_ai_label_and_one_feedback_pair(stack: Stack, personal: Answer) -> None:
    labels = sum(i.labels for i in personal.items)
    likes = sum(i.likes for i in personal.items)
    dislikes = sum(i.dislikes for i in personal.items)
    assert (labels, likes, dislikes) == (1, 1, 1), (
        f"one answer shows {labels} 'AI generated' labels and {likes} 👍 / {dislikes} 👎 buttons over "
        f"{len(personal.items)} messages {evidence(stack, personal)}")


async def test_feedback_click_sends_the_rating_and_comment(stack: Stack, feedback: FeedbackRun) -> None:
    shots = ", ".join(Path(s).name for s in feedback.shots)
    assert len(feedback.clicked) == 1, f"the 👎 click sent {len(feedback.clicked)} invokes ({stack.artifacts}: {shots})"
    value = feedback.clicked[0]["request"]["body"].get("value") or {}
    assert value.get("actionName") == "feedback" and value["actionValue"]["reaction"] == "dislike", value
    assert COMMENT in json.dumps(value), f"the comment was not sent: {value}"
    assert int(feedback.clicked[0]["response"].get("statusCode") or 0) == 200, feedback.clicked[0]["response"]


async def test_feedback_with_comment_reaches_moveworks(stack: Stack, feedback: FeedbackRun) -> None:
    """A Teams rating of the answer (see the `feedback` fixture) reaches Moveworks, comment included."""
    assert feedback.teams_shaped and int(feedback.teams_shaped[0]["response"].get("statusCode") or 0) == 200, (
        feedback.teams_shaped)
    records = feedback.records[len(feedback.clicked_records):]
    assert len(records) == 1, f"Moveworks got {len(records)} ratings for one 👎 ({stack.artifacts}/serve.log)"
    assert records[0]["rating"] == "unhelpful", records[0]
    assert records[0]["additional_feedback"] == COMMENT, f"the typed comment did not reach Moveworks: {records[0]}"


async def test_action_button_runs_the_action(stack: Stack, action: Answer) -> None:
    asked = [text for _, text in questions(stack.sim)]
    shown = [i.text for i in action.items]
    assert any("Done: " + PERSONAL_ACTIONS[0]["label"] in t for t in shown), (
        f"pressing the button showed {shown}; Moveworks got {asked[-2:]} {evidence(stack, action)}")


async def test_streaming_keeps_moving_while_a_table_is_written(stack: Stack, table: Answer) -> None:
    timing = sim_timing(stack.sim, "[pg-table]")
    assert timing.get("first_text") and timing.get("end"), timing
    still = longest_still(table.history, timing["first_text"], timing["end"])
    shown = [f"{s.t - table.asked_at:.1f}s {s.text[:60]!r}" for s in table.history]
    assert still <= LONGEST_STILL, (
        f"the answer stood still for {still:.1f} s while Moveworks was writing it "
        f"({timing['end'] - timing['first_text']:.1f} s); shown: {shown} {evidence(stack, table)}")
    assert table.final is not None
    for words in ("Build farm access levels", "Viewer", "See builds and their logs", "Admin",
                  "Change pipelines and secrets", "start builds right away"):
        assert words in table.final.text, f"{words!r} missing from {table.final.text!r}"


# --- group chat -----------------------------------------------------------------------------------


async def test_personal_chat_growing_answer_shows_no_raw_markdown(stack: Stack, table: Answer) -> None:
    # TABLE_TEXT streams in 4 snapshots 1.2 s apart: the first ends inside the table's header row,
    # the third inside a **bold** phrase, so each is on screen for at least one update.
    raw = raw_markdown(table.history)
    assert not raw, f"Markdown markers shown as text while the answer grew: {raw} {evidence(stack, table)}"


async def test_group_chat_answers_only_when_mentioned(stack: Stack, group: Answer) -> None:
    asked = [text for _, text in questions(stack.sim)]
    ignored = [q for q in asked if "nomention]" in q and "[pg-group" in q]
    assert not ignored, f"a message that did not mention the bot was answered: {ignored}"
    assert "when is my laptop refresh due? [pg-group]" in asked, f"the question reached Moveworks as: {asked}"
    assert len(group.items) >= 1 and plain(GROUP_TEXT[:40]) in group.items[0].text, evidence(stack, group)
    assert (group.inbound.get("conversation") or {}).get("conversationType") == "groupChat"


async def test_group_chat_final_answer_is_complete(stack: Stack, group: Answer) -> None:
    _, _, final = with_citations(GROUP_TEXT, [("", ""), ("", "")])
    problems = []
    if group.errors():
        problems.append(f"the playground refused bot calls: {group.errors()}")
    if final_text_frame(group) != final:
        problems.append(f"final text {final_text_frame(group)!r}")
    if group.final is None or group.final.cites != ["1", "2"]:
        problems.append(f"citations shown: {group.final.cites if group.final else None} (text "
                        f"{group.final.text if group.final else None!r})")
    buttons = [b for item in group.items for b in item.buttons if b not in ("Like", "Dislike")]
    if buttons != [a["label"] for a in GROUP_ACTIONS]:
        problems.append(f"action buttons shown: {buttons}")
    assert not problems, "; ".join(problems) + " " + evidence(stack, group)


async def test_group_chat_growing_answer_shows_no_raw_markdown(stack: Stack, group: Answer) -> None:
    raw = raw_markdown(group.history)
    assert not raw, f"Markdown markers shown as text while the answer grew: {raw} {evidence(stack, group)}"
    assert len(group.history) >= 2, f"no growing edits shown: {[s.text for s in group.history]}"


# --- channel ----------------------------------------------------------------------------------------


async def test_channel_answers_only_when_mentioned_in_the_reply_chain(stack: Stack, channel: ChannelRun) -> None:
    asked = [text for _, text in questions(stack.sim)]
    ignored = [q for q in asked if "nomention]" in q and "[pg-channel" in q]
    assert not ignored, f"a message that did not mention the bot was answered: {ignored}"
    first, followup = channel.first, channel.followup
    inbound_conv = (first.inbound.get("conversation") or {}).get("id", "")
    assert ";messageid=" in inbound_conv and first.inbound["conversation"].get("conversationType") == "channel"
    # Every write of the answer went into that reply chain, and the page shows it under that post.
    writes = {c.get("conversationId") for c in first.calls}
    assert writes == {inbound_conv}, writes
    assert first.items and first.items[0].post and "[pg-channel]" in first.items[0].post, evidence(stack, first)
    others = [m for m in channel.posts if m.get("post") and "[pg-channel-nomention]" in m["post"]]
    assert not others, f"the bot replied under a post that did not mention it: {others}"
    # The follow-up in the chain: answered there, in the same Moveworks conversation. (Read from what
    # the page was given rather than its DOM: the playground's page now and then loses a bot reply
    # that arrives while it reconnects its conversation websocket after the user sent a reply.)
    assert (followup.inbound.get("conversation") or {}).get("id") == inbound_conv
    assert final_text_frame(followup) == CHANNEL_FOLLOWUP_TEXT, (
        f"the follow-up's answer in the chain: {final_text_frame(followup)!r} {evidence(stack, followup)}")
    assert {c.get("conversationId") for c in followup.calls} == {inbound_conv}
    convs = {conv for conv, text in questions(stack.sim) if "[pg-channel" in text and "nomention" not in text}
    assert len(convs) == 1, f"the follow-up started a new Moveworks conversation: {convs}"


async def test_channel_final_answer_is_complete(stack: Stack, channel: ChannelRun) -> None:
    first = channel.first
    _, _, final = with_citations(CHANNEL_TEXT, [("", ""), ("", "")])
    problems = []
    if first.errors():
        problems.append(f"the playground refused bot calls: {first.errors()}")
    if final_text_frame(first) != final:
        problems.append(f"final text {final_text_frame(first)!r}")
    if first.final is None or first.final.cites != ["1", "2"]:
        problems.append(f"citations shown: {first.final.cites if first.final else None} (text "
                        f"{first.final.text if first.final else None!r})")
    buttons = [b for item in first.items for b in item.buttons if b not in ("Like", "Dislike")]
    if buttons != [a["label"] for a in CHANNEL_ACTIONS]:
        problems.append(f"action buttons shown: {buttons}")
    assert not problems, "; ".join(problems) + " " + evidence(stack, first)


async def test_channel_growing_answer_shows_no_raw_markdown(stack: Stack, channel: ChannelRun) -> None:
    raw = raw_markdown(channel.first.history)
    assert not raw, f"Markdown markers shown as text while the answer grew: {raw} {evidence(stack, channel.first)}"
    assert len(channel.first.history) >= 2, f"no growing edits shown: {[s.text for s in channel.first.history]}"
