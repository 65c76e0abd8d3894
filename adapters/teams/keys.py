"""The signing keys of inbound Bot Framework tokens, fetched off the event loop.

botbuilder validates an inbound token through `_OpenIdMetadata.get(kid)`, which fetches the OpenID
metadata and the key set with a blocking `requests.get` without a timeout, on the event loop,
whenever its keys are missing or a day old, or lack the token's key id (then at most hourly). One
forged token while the key endpoint hangs froze the whole process. `SigningKeys` takes its place
in botbuilder's shared cache (`install_signing_keys`, for every metadata URL botbuilder may pick
from a token's issuer): the same `get(kid)`, but every fetch runs in a background thread with
timeouts, one at a time per URL, and after a failed fetch no request starts another for
`FAILURE_BACKOFF` seconds, so a stream of forged tokens cannot make it fetch over and over.

`get(kid)`, which a request awaits at most `WAIT` seconds:

* keys loaded and the kid among them: that key (stale keys start a fetch in the background and
  are used meanwhile);
* no keys yet: fetch; if that fails or takes too long, `SigningKeysUnavailable` (the route's 503);
* kid unknown: fetch again at most every `UNKNOWN_KID_INTERVAL`, then `PermissionError` (401).

`AuthRefresher` (connector.py) keeps the channel's keys loaded in the background; this module is
what stands between a request and the network when they are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import requests
from botframework.connector.auth import AuthenticationConstants, GovernmentConstants
from botframework.connector.auth.channel_validation import ChannelValidation
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor
from jwt.algorithms import RSAAlgorithm
from jwt.exceptions import InvalidKeyError

log = logging.getLogger("adapters.teams")

T = TypeVar("T")

HTTP_TIMEOUT = 5.0  # each of the two requests of one fetch (metadata, then key set)
WAIT = 5.0  # longest a request waits for a fetch
MAX_AGE = 24 * 3600.0  # botbuilder's own: older keys are re-read (in the background here)
UNKNOWN_KID_INTERVAL = 300.0
FAILURE_BACKOFF = 10.0


class SigningKeysUnavailable(Exception):
    """No signing keys could be fetched, so no inbound token can be verified now."""


@dataclass(frozen=True)
class SigningKey:
    """What botbuilder's `JwtTokenExtractor` reads from a metadata lookup."""

    public_key: Any
    endorsements: list[str]


def in_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run `fn()` in a daemon thread; its result arrives in the returned future. A request that
    hangs cannot hold up the loop's or the interpreter's shutdown (unlike `run_in_executor`)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not done.done():
            done.set_result(value) if ok else done.set_exception(value)

    def work() -> None:
        value: Any
        try:
            value, ok = fn(), True
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            value, ok = exc, False
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, value)

    threading.Thread(target=work, name="teams-auth", daemon=True).start()
    return done


def fetch_signing_keys(url: str, timeout: float = HTTP_TIMEOUT) -> list[dict[str, Any]]:
    """What botbuilder's `_OpenIdMetadata._refresh` fetches, with timeouts (blocking)."""
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    keys = requests.get(response.json()["jwks_uri"], timeout=timeout)
    keys.raise_for_status()
    found = keys.json()["keys"]
    if not isinstance(found, list):
        raise ValueError("the key set has no list of keys")
    return [key for key in found if isinstance(key, dict)]


class SigningKeys:
    """Drop-in for botbuilder's `_OpenIdMetadata` of one URL (see the module docstring)."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.clock = clock
        self.keys: list[dict[str, Any]] = []
        self.last_updated = datetime.min  # botbuilder's attribute, kept for anything reading it
        self.fetched_at: float | None = None
        self.failed_at: float | None = None
        self.attempted_at: float | None = None
        self.fetches = 0
        self._parsed: dict[str, SigningKey | None] = {}
        self._fetch: asyncio.Future[list[dict[str, Any]]] | None = None

    def load(self, keys: Iterable[dict[str, Any]]) -> None:
        self.keys = list(keys)
        self._parsed = {}
        self.fetched_at = self.clock()
        self.failed_at = None
        self.last_updated = datetime.now()

    async def get(self, key_id: str | None) -> SigningKey:
        if not self.keys:
            await self._wait_for_fetch()
        elif self.fetched_at is None or self.clock() - self.fetched_at >= MAX_AGE:
            self._start()  # use the keys we have; fresher ones arrive in the background
        key = self._find(key_id)
        if key is None and self.keys and (
            self.attempted_at is None or self.clock() - self.attempted_at >= UNKNOWN_KID_INTERVAL
        ):
            await self._wait_for_fetch()  # keys may have rolled over
            key = self._find(key_id)
        if key is not None:
            return key
        if not self.keys:
            raise SigningKeysUnavailable(f"the Bot Framework signing keys could not be fetched from {self.url}")
        raise PermissionError("the token is not signed with a Bot Framework signing key")

    async def refresh(self, timeout: float = WAIT) -> None:
        """Fetch now (or join the fetch under way); raises when it fails or times out."""
        future = self._start(force=True)
        assert future is not None
        keys = await asyncio.wait_for(asyncio.shield(future), timeout)
        if self.fetched_at is None or not self.keys:  # the done-callback may not have run yet
            self.load(keys)

    async def _wait_for_fetch(self) -> None:
        future = self._start()
        if future is not None:
            with contextlib.suppress(Exception):  # logged by `_fetched`; the caller checks the keys
                await asyncio.wait_for(asyncio.shield(future), WAIT)

    def _start(self, *, force: bool = False) -> asyncio.Future[list[dict[str, Any]]] | None:
        """The fetch under way in this loop, else a new one (unless one failed a moment ago)."""
        loop = asyncio.get_running_loop()
        running = self._fetch
        if running is not None and not running.done() and running.get_loop() is loop:
            return running
        now = self.clock()
        if not force and self.failed_at is not None and now - self.failed_at < FAILURE_BACKOFF:
            return None
        self.attempted_at = now
        self.fetches += 1
        future = in_thread(functools.partial(fetch_signing_keys, self.url))
        future.add_done_callback(self._fetched)
        self._fetch = future
        return future

    def _fetched(self, future: asyncio.Future[list[dict[str, Any]]]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self.load(future.result())
            return
        self.failed_at = self.clock()
        log.warning("teams: could not fetch the Bot Framework signing keys from %s (%s: %s)",
                    self.url, type(exc).__name__, str(exc)[:200] or "timed out")

    def _find(self, key_id: str | None) -> SigningKey | None:
        if not key_id:
            return None
        if key_id not in self._parsed:
            found = next((key for key in self.keys if key.get("kid") == key_id), None)
            parsed: SigningKey | None = None
            if found is not None:
                try:
                    parsed = SigningKey(RSAAlgorithm.from_jwk(json.dumps(found)),
                                        list(found.get("endorsements") or []))
                except (InvalidKeyError, ValueError, TypeError, KeyError):
                    log.warning("teams: signing key %s from %s is not a usable RSA key", key_id, self.url)
            if found is None:
                return None  # not cached: a later fetch may bring it
            self._parsed[key_id] = parsed
        return self._parsed[key_id]


def openid_urls() -> tuple[str, ...]:
    """Every metadata URL botbuilder may read keys from, by the token's issuer: the channel's
    (`TEAMS_OPENID_METADATA_URL` when set), the Emulator's and skills', and the US Government's."""
    urls = (
        ChannelValidation.open_id_metadata_endpoint or AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL,
        AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL,
        AuthenticationConstants.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL,
        GovernmentConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL,
        GovernmentConstants.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL,
    )
    return tuple(dict.fromkeys(urls))


def install_signing_keys(url: str) -> SigningKeys:
    """The `SigningKeys` botbuilder uses for `url` (installed in its shared cache if needed)."""
    cache = JwtTokenExtractor.metadataCache
    current = cache.get(url)
    if isinstance(current, SigningKeys):
        return current
    keys = SigningKeys(url)
    if current is not None and getattr(current, "keys", None):
        keys.load(current.keys)
    cache[url] = keys
    return keys


def use_signing_keys(metadata_url: str | None) -> None:
    """Read the channel's keys from `metadata_url` (None: the Bot Framework's), and put a
    `SigningKeys` in place of botbuilder's blocking fetcher for every URL it may use. Process-wide,
    as botbuilder's own cache and `ChannelValidation.open_id_metadata_endpoint` are."""
    ChannelValidation.open_id_metadata_endpoint = metadata_url
    for url in openid_urls():
        install_signing_keys(url)
