"""The relay: one inbound question from any adapter → one streamed Moveworks answer in chat.

Order of work for a question: dedupe the delivery (store, so it holds across processes),
resolve the employee's Moveworks identity (`identity.py`), then, through the thread gate, get or
create the conversation of this (thread, employee) pair and stream the answer into the adapter's
sink (`renderer.py`). Every way this can fail ends with a short, kind message in the thread.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from bridge import texts
from bridge.answers.attachments import Attachments
from bridge.answers.feedback import submit_feedback
from bridge.answers.forms import Forms
from bridge.answers.identity import Identities, NoIdentity
from bridge.answers.recovery import Interrupted, announce_interrupted
from bridge.answers.renderer import AnswerFailed, AnswerTimedOut, RenderResult, StreamRenderer
from bridge.contract import ChatAdapter, FeedbackAck, ReplySink
from bridge.errors import PlatformError, StoreUnavailable, UserCanceled
from bridge.mechanisms.gate import ThreadGate
from bridge.mechanisms.ratelimit import Budgets, Sleep
from bridge.mechanisms.tasks import TaskSet
from bridge.models import Answer, ChatUser, FeedbackTarget, Inbound, ThreadKey, ThreadLink
from bridge.moveworks.client import MoveworksClient
from bridge.moveworks.errors import (
    AuthError,
    InvalidRequest,
    MoveworksError,
    NotFound,
    RateLimited,
)
from bridge.moveworks.models import FileRef, Response
from bridge.process import metrics
from bridge.store.aio import AnyStore, as_async

if TYPE_CHECKING:
    from bridge.answers.intake import Intake

LIVE_AGENTS = "live_agent"  # kv: conversation id -> the agent's name while a human is on it
LIVE_NOTED = "live_agent.noted"  # kv: conversations already told their message was passed on
log = logging.getLogger(__name__)


NOTE_TIMEOUT = 5.0  # seconds a restart note may take while shutting down


def apology_for(exc: BaseException) -> str:
    """The short, kind text a user sees for a failure (never the exception itself)."""
    if isinstance(exc, RateLimited):
        return texts.BUSY
    if isinstance(exc, AuthError):
        return texts.SIGN_IN_FAILED
    if isinstance(exc, AnswerFailed):
        return texts.ANSWER_FAILED
    if isinstance(exc, TimeoutError | AnswerTimedOut):
        return texts.TOO_SLOW
    if isinstance(exc, MoveworksError):
        return texts.UNAVAILABLE
    return texts.BUG


class Relay:
    def __init__(
        self,
        *,
        store: AnyStore,
        client: MoveworksClient,
        per_employee: bool,
        budgets: Budgets | None = None,
        gate: ThreadGate | None = None,
        answer_timeout: float = 180.0,
        attachments: Attachments | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = as_async(store)
        self.client = client
        self.per_employee = per_employee
        self.budgets = budgets or Budgets(clock=clock, sleep=sleep)
        self.gate = gate or ThreadGate()
        self.answer_timeout = answer_timeout  # seconds from the first step to the end of an answer
        # Answers cut off by the shutdown whose note could not be written (the next start tells
        # the streaming ones; see `_stream`).
        self.unmarked = 0
        self.adapters: dict[str, ChatAdapter] = {}
        self.identities = Identities(store, per_employee=per_employee, lookup=self._lookup_email,
                                     background=self.background)
        self._clock = clock
        self._sleep = sleep
        self._tasks = TaskSet()
        self.attachments = attachments or Attachments(
            client, enabled=True, max_mb=10.0, purpose="CONVERSATION_INPUT"
        )
        self.forms = Forms(self)
        self._stops: dict[str, asyncio.Event] = {}  # thread -> set when its person pressed Stop
        # This process among those sharing the store (`serve` sets it): the owner of the replies
        # it streams, so another process only ever recovers the replies of a dead one.
        self.owner: str | None = None
        self.intake: Intake | None = None  # the durable inbound queue's worker, when running
        self._first_text_observers: list[Callable[[str, float], None]] = []
        self._activity_observers: list[Callable[[str | None], object]] = []

    # --- wiring ------------------------------------------------------------------------------

    def register(self, adapter: ChatAdapter) -> None:
        """Checked once, here: an adapter implements the contract or is refused."""
        if not isinstance(adapter, ChatAdapter):
            raise TypeError(f"{type(adapter).__name__} does not implement bridge.contract.ChatAdapter")
        self.adapters[adapter.platform] = adapter

    def observe_first_text(self, callback: Callable[[str, float], None]) -> None:
        """Benchmarks: called with (platform, seconds from first delta to first visible text)."""
        self._first_text_observers.append(callback)

    def on_activity(self, callback: Callable[[str | None], object]) -> None:
        """Called with the Moveworks identity of every employee who asks something (the poller
        starts polling a new employee at once instead of at its next refresh)."""
        self._activity_observers.append(callback)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, inbound: Inbound) -> bool:
        """Accept a question: stored in the durable inbound queue (deduplicated) before this
        returns; a worker of some live process answers it (`bridge.answers.intake`). Without a
        queue worker (tests, the terminal) the answer streams in a background task here."""
        if self.intake is not None:
            return await self.intake.submit(inbound)
        self._tasks.spawn(self.handle(inbound), name=f"answer:{inbound.thread.platform}")
        return True

    def spawn_answer(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """An answer task, drained (and cut off with a note) at shutdown like every answer."""
        return self._tasks.spawn(coro, name=name)

    def background(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run bookkeeping work (e.g. restart notes) without holding up the caller; drained
        like answers at shutdown."""
        self._tasks.spawn(coro, name=name)

    async def drain(self, timeout: float) -> int:
        """Graceful shutdown: let answers finish for `timeout` s; the rest end with a note (or,
        when the note cannot be written in time, are counted in `unmarked`). Returns how many
        had to be cut off."""
        return await self._tasks.drain(timeout)

    async def identity_for(self, user: ChatUser) -> str | None:
        return await self.identities.identity_for(user)

    async def _lookup_email(self, user: ChatUser) -> str | None:
        adapter = self.adapters.get(user.platform)
        return await adapter.resolve_email(user) if adapter is not None else None

    async def feedback(
        self, user: ChatUser, target: FeedbackTarget, helpful: bool, comment: str | None = None
    ) -> FeedbackAck:
        """Send a 👍/👎 (and its comment) to Moveworks as the asker; returns the acknowledgement."""
        return await submit_feedback(self.store, self.client, user, target, helpful, comment)

    def stop_answer(self, thread: ThreadKey) -> bool:
        """The person pressed Stop: end the answer streaming in `thread` (the Moveworks stream is
        closed at once and the reply ends with "Stopped."). False when nothing was streaming."""
        stop = self._stops.get(thread.lock_key)
        if stop is None or stop.is_set():
            return False
        stop.set()
        return True

    async def post_note(self, link: ThreadLink, text: str) -> bool:
        """A short note from the bridge (a form's receipt, a help text) in the link's thread,
        in turn with answers and notifications there. False when it could not be written."""
        async with self.gate.hold(link.thread):
            return await self._note(link.thread, link.address, text)

    async def tell(self, inbound: Inbound, text: str) -> bool:
        """A short note to the asker in the question's thread (in turn with its answers)."""
        async with self.gate.hold(inbound.thread):
            return await self._note(inbound.thread, inbound.address, text)

    async def _note(self, thread: ThreadKey, address: dict[str, Any], text: str) -> bool:
        adapter = self.adapters.get(thread.platform)
        if adapter is None:
            return False
        try:
            sink = await adapter.open_reply(thread, address, user=None, proactive=True)
            await sink.finish(Answer(text=text, ai_generated=False))
        except Exception:  # a note is best effort; the person still has the form's own answer
            log.warning("could not post a note in a %s thread", thread.platform, exc_info=True)
            return False
        return True

    async def announce_interrupted(self, interrupted: Interrupted) -> None:
        """After a crash: tell each thread whose answer was cut off (see `recovery.py`)."""
        await announce_interrupted(interrupted, store=self.store, adapters=self.adapters, gate=self.gate)

    # --- questions ---------------------------------------------------------------------------

    async def handle(
        self, inbound: Inbound, *, dedupe: bool = True, started: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Answer one question in its thread. `dedupe=False` when the queue already deduplicated
        it; `started` is awaited once its turn is about to be posted to Moveworks (from then on a
        crash must not ask it again: the asker is told instead)."""
        platform = inbound.thread.platform
        try:
            fresh = await self.store.inbound.claim(platform, inbound.dedupe_id) if dedupe else True
        except StoreUnavailable:
            fresh = True  # cannot dedupe; the asker is told below rather than left in silence
        if not fresh:
            metrics.INBOUND_DUPLICATES.labels(platform).inc()
            log.info("duplicate delivery %s dropped", inbound.dedupe_id)
            return
        metrics.INBOUND.labels(platform).inc()
        adapter = self.adapters.get(platform)
        if adapter is None:
            log.error("no adapter registered for %s", platform)
            return
        try:
            sink = await adapter.open_reply(
                inbound.thread, inbound.address, user=inbound.user, proactive=False
            )
        except Exception:  # nowhere to write, so nothing kinder to do
            log.warning("cannot open a reply in a %s thread", platform, exc_info=True)
            metrics.ANSWERS.labels(platform, "undeliverable").inc()
            return
        renderer = self._renderer(inbound, sink)
        outcome = "failed"
        try:
            async with self.gate.hold(inbound.thread):
                metrics.ACTIVE_ANSWERS.inc()
                try:
                    outcome = await self._answer(inbound, renderer, started)
                except StoreUnavailable:
                    log.error("the store cannot be written; telling the asker")
                    await self._fail_quietly(renderer, texts.STORE_DOWN)
                finally:
                    metrics.ACTIVE_ANSWERS.dec()
        except _Interrupted:
            outcome = "interrupted"
            raise
        except asyncio.CancelledError:
            # Shutdown before the answer started streaming (waiting for the thread, looking up
            # the employee, creating the conversation): say so rather than go silent. Once
            # streaming, `_stream` has already said it.
            outcome = "interrupted"
            # From the durable queue (`started` given), the question goes back to the queue and
            # another process answers it: say that, not "please ask again".
            note = texts.RESTARTED if started is None else texts.REQUEUED
            if not await self._note_restart(renderer, note):
                self.unmarked += 1
                log.warning("a question cancelled by the shutdown before it streamed could not be "
                            "told so in its %s thread", platform)
            raise
        finally:
            metrics.ANSWERS.labels(platform, outcome).inc()

    @staticmethod
    async def _note_restart(renderer: StreamRenderer, note: str = texts.RESTARTED) -> bool:
        """The restart note, within a few seconds; False when it could not be written."""
        try:
            await asyncio.wait_for(asyncio.shield(renderer.fail(note)), NOTE_TIMEOUT)
        except Exception:  # noqa: BLE001 - best effort while shutting down; the caller says what happened
            return False
        return True

    def _renderer(self, inbound: Inbound, sink: ReplySink) -> StreamRenderer:
        platform = inbound.thread.platform

        def first_text(seconds: float) -> None:
            metrics.FIRST_TEXT_SECONDS.labels(platform).observe(seconds)
            for observer in self._first_text_observers:
                observer(platform, seconds)

        budget = self.budgets.get(sink.budget_key, sink.capabilities.write_budget)
        return StreamRenderer(sink, budget, platform=platform, clock=self._clock, sleep=self._sleep,
                              on_first_text=first_text)

    async def _answer(
        self, inbound: Inbound, renderer: StreamRenderer, started: Callable[[], Awaitable[None]] | None = None
    ) -> str:
        text = inbound.text.strip()
        adapter = self.adapters.get(inbound.thread.platform)
        if inbound.callback_id is None:
            if not text and inbound.files and not self.attachments.usable(adapter):
                await renderer.fail(texts.FILES_ONLY)
                return "rejected"
            if not text and not inbound.files:
                await renderer.fail(texts.EMPTY_QUESTION)
                return "rejected"
            if len(text) > texts.MAX_INPUT_CHARS:
                await renderer.fail(texts.TOO_LONG)
                return "rejected"
        # The thinking status shows now, before the slow steps (directory lookup, token,
        # conversation), and everything until the answer ends runs against one deadline.
        renderer.begin()
        deadline = asyncio.get_running_loop().time() + self.answer_timeout
        try:
            async with asyncio.timeout_at(deadline):
                identity = await self.identities.identity_for(inbound.user)
                await self.store.employees.save(inbound.user, active=True)
                for observer in self._activity_observers:
                    try:
                        result = observer(identity)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:  # an observer must never cost an answer
                        log.warning("activity observer failed", exc_info=True)
                link = await self._link_for(inbound, identity)
                files = await self._pass_on_files(inbound, adapter, link)
        except NoIdentity:
            await renderer.fail(texts.NO_IDENTITY)
            return "rejected"
        except _Refused as refused:
            await renderer.fail(refused.message)
            return "rejected"
        except TimeoutError:
            log.warning("no conversation after %.0fs (directory, token or Moveworks too slow)",
                        self.answer_timeout)
            await self._fail_quietly(renderer, texts.TOO_SLOW)
            return "timed_out"
        except MoveworksError as exc:
            log.warning("could not create a conversation: %s", exc)
            await self._fail_quietly(renderer, apology_for(exc))
            return "failed"
        if files is None:
            await renderer.fail(texts.FILES_NONE_USABLE)
            return "rejected"
        return await self._stream(inbound, link, renderer, deadline, retry_lost=True, files=files,
                                  started=started)

    async def _pass_on_files(
        self, inbound: Inbound, adapter: ChatAdapter | None, link: ThreadLink
    ) -> tuple[FileRef, ...] | None:
        """Upload the question's attachments; tell the asker about any left behind. None when
        nothing is left to ask (no text, and no file could be passed on)."""
        if not inbound.files or inbound.callback_id is not None:
            return ()
        passed = await self.attachments.pass_on(adapter, link.identity or None, inbound.files)
        if passed.problems:
            await self._note(inbound.thread, inbound.address, "\n".join(passed.problems))
        if not inbound.text.strip() and not passed.files:
            return None
        return passed.files

    async def _link_for(self, inbound: Inbound, identity: str | None) -> ThreadLink:
        if inbound.callback_id is not None:
            links = await self.store.links.for_conversation(inbound.callback_conversation_id or "")
            if not links:
                raise _Refused(texts.CALLBACK_GONE)
            owner = links[0]
            if owner.user_id != inbound.user.user_id or owner.thread.platform != inbound.thread.platform:
                raise _Refused(texts.NOT_OWNER)
            return owner
        link = await self.store.links.get(inbound.thread, inbound.user.user_id)
        if link is not None and link.active:
            await self.store.links.touch(link.id, inbound.address or None)
            return link
        conversation = await self.client.create_conversation(identity)
        return await self.store.links.insert(
            inbound.thread,
            inbound.user.user_id,
            identity or "",
            conversation.conversation_id,
            inbound.address,
        )

    async def _stream(
        self,
        inbound: Inbound,
        link: ThreadLink,
        renderer: StreamRenderer,
        deadline: float,
        *,
        retry_lost: bool,
        files: tuple[FileRef, ...] = (),
        started: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        identity = link.identity or None
        reply_id = await self.store.replies.start(link.id, owner=self.owner)
        if started is not None:  # the reply row exists: a crash from here on is told, not re-asked
            await started()
        renderer.on_response_id = lambda rid: self.store.replies.finish(reply_id, "streaming", response_id=rid)
        renderer.on_checkpoint = lambda checkpoint: self.store.replies.checkpoint(reply_id, checkpoint)
        await renderer.save_checkpoint()  # what the status line already shows
        renderer.on_empty = lambda response: self._empty_turn(link, response)
        question = texts.with_thread_context(
            inbound.text.strip() or texts.attached_only(inbound.files), inbound.context
        )
        events = self.client.stream_response(
            identity,
            link.conversation_id,
            text=None if inbound.callback_id else question,
            callback_id=inbound.callback_id,
            files=files,
        )
        stop = self._stops[inbound.thread.lock_key] = asyncio.Event()
        try:
            result = await self._run_until_stopped(renderer, events, deadline, stop)
        except asyncio.CancelledError:
            # Shutdown: the store says "interrupted" only once the thread says so too; a reply
            # whose note could not be written stays "streaming", so the next start tells it.
            if await self._note_restart(renderer):
                await self.store.replies.finish(reply_id, "interrupted")
            else:
                self.unmarked += 1
                log.warning("an answer cut off by the shutdown could not be marked in its thread; "
                            "the next start will tell it")
            raise _Interrupted() from None
        except UserCanceled:
            await self.store.replies.finish(reply_id, "canceled")
            log.info("the user stopped the answer")
            if stop.is_set():  # Stop from the platform's event: the reply still needs an end
                await self._fail_quietly(renderer, texts.STOPPED)
            return "canceled"
        except AnswerTimedOut:
            await self.store.replies.finish(reply_id, "failed")
            log.warning("the answer did not end within %.0fs; ended it", self.answer_timeout)
            await self._fail_quietly(renderer, texts.TOO_SLOW)
            return "timed_out"
        except NotFound as exc:
            await self.store.replies.finish(reply_id, "failed")
            if retry_lost and renderer.response_id is None and inbound.callback_id is None:
                # The conversation is gone on the Moveworks side: start a new one once.
                log.info("conversation %s not found; starting a new one", link.conversation_id)
                await self.store.links.deactivate(link.id)
                retry = self._renderer(inbound, renderer.sink)
                try:
                    async with asyncio.timeout_at(deadline):
                        fresh = await self._link_for(inbound, identity)
                except (MoveworksError, TimeoutError) as err:
                    await self._fail_quietly(retry, apology_for(err))
                    return "failed"
                return await self._stream(inbound, fresh, retry, deadline, retry_lost=False, files=files)
            await self._fail_quietly(renderer, apology_for(exc))
            return "failed"
        except InvalidRequest as exc:
            await self.store.replies.finish(reply_id, "failed")
            log.warning("Moveworks refused the request: %s", exc)
            await self._fail_quietly(renderer, texts.CALLBACK_GONE if inbound.callback_id else texts.ANSWER_FAILED)
            return "failed"
        except PlatformError as exc:
            await self.store.replies.finish(reply_id, "failed")
            if exc.permanent:
                log.warning("cannot write into the thread any more: %s", exc)
                await self.store.links.deactivate(link.id)
                return "undeliverable"
            log.warning("delivery failed: %s", exc)
            await self._fail_quietly(renderer)
            return "failed"
        except (MoveworksError, AnswerFailed) as exc:
            await self.store.replies.finish(reply_id, "failed")
            log.warning("answer failed: %s", exc)
            await self._fail_quietly(renderer, apology_for(exc))
            return "failed"
        except StoreUnavailable:
            raise  # the caller tells the asker; nothing more can be recorded
        except Exception:
            await self.store.replies.finish(reply_id, "failed")
            log.exception("unexpected error while answering")
            await self._fail_quietly(renderer, texts.BUG)
            return "failed"
        finally:
            if self._stops.get(inbound.thread.lock_key) is stop:
                del self._stops[inbound.thread.lock_key]
        await self._note_live_agent(link, result.answer)
        try:
            await self.store.replies.finish(
                reply_id, "final", response_id=result.response_id, platform_message_ids=result.platform_ids
            )
            for message_id in result.message_ids:
                await self.store.replies.mark_shown(message_id, link.id, "stream")
        except StoreUnavailable:
            # The answer is visible; only the bookkeeping is lost (the poller may post the same
            # message again if Moveworks also lists it as an event).
            log.error("the answer was shown but the store could not record it")
        return "answered"

    @staticmethod
    async def _run_until_stopped(
        renderer: StreamRenderer, events: Any, deadline: float, stop: asyncio.Event
    ) -> RenderResult:
        """`renderer.run`, ended early (closing the Moveworks stream) when `stop` is set."""
        run = asyncio.ensure_future(renderer.run(events, deadline=deadline))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            raise
        finally:
            stopped.cancel()
        if run.done():
            return run.result()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        raise UserCanceled()

    # --- live agents -------------------------------------------------------------------------

    async def _note_live_agent(self, link: ThreadLink, answer: Answer) -> None:
        """Remember whether the conversation is with a human agent (their name), so an empty
        turn is not taken for a missing answer; an assistant answer ends it."""
        live = self.store.kv.namespace(LIVE_AGENTS)
        if answer.sender is not None:
            await live.set(link.conversation_id, answer.sender.name)
        elif answer.message_ids and answer.ai_generated:
            await live.delete(link.conversation_id)

    async def _empty_turn(self, link: ThreadLink, response: Response) -> Answer:
        """A turn that completed with no outputs and no reply found in history: what a live-agent
        hand-off looks like (the agent answers later, through the poller). Say it was passed on,
        quietly, never "no answer"."""
        live = self.store.kv.namespace(LIVE_AGENTS)
        agent = await live.get(link.conversation_id) or await self._agent_in_history(link)
        if agent:
            await live.set(link.conversation_id, agent)
        noted = self.store.kv.namespace(LIVE_NOTED)
        if agent:
            text = texts.LIVE_SENT.format(name=agent)
        elif await noted.get(link.conversation_id):
            text = texts.LIVE_SENT_ANON
        else:
            await noted.set(link.conversation_id, "1")
            text = texts.LIVE_CONNECTING
        log.info("response %s completed with no outputs (a live-agent hand-off?)", response.response_id)
        return Answer(text=text, conversation_id=link.conversation_id, response_id=response.response_id,
                      ai_generated=False)

    async def _agent_in_history(self, link: ThreadLink) -> str | None:
        """The agent on the conversation per its latest messages (another process, or the
        poller being off, may have delivered what they said)."""
        try:
            page = await self.client.list_conversation_messages(
                link.identity or None, link.conversation_id, limit=10
            )
        except MoveworksError as exc:
            log.info("could not read the history of an empty turn: %s", exc)
            return None
        for message in page.items:  # newest first; an assistant answer after them ends it
            if message.actor == "ASSISTANT":
                return None
            if message.actor == "LIVE_AGENT":
                return message.sender_name or texts.LIVE_AGENT
        return None

    @staticmethod
    async def _fail_quietly(renderer: StreamRenderer, message: str = texts.ANSWER_FAILED) -> None:
        try:
            await renderer.fail(message)
        except Exception:  # the platform itself is failing; nothing more to do
            log.warning("could not post the failure message", exc_info=True)


class _Interrupted(asyncio.CancelledError):
    """Cancelled while streaming; the thread already shows the restart note."""


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
