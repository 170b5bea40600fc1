"""Discord's rate limits as the bot sees them: what each response's ``X-RateLimit-*`` headers say about its bucket,
and the budget a streamed reply plans its edits with.

discord.py already keeps to the buckets (``discord/http.py``: it reads the headers, waits before a request when the
bucket is empty, and waits out a 429), but it does so by *waiting*: an edit made on an empty bucket holds its
caller until the bucket resets (up to its whole window, 5 s for a message's or an interaction's bucket), and the
request that empties a bucket holds its caller too. A streamed answer that edited every STREAM_EDIT_INTERVAL_S
would stall on its own bucket, and the answers of a busy channel, which share the channel's bucket, would stall one
another. So the bot reads the same headers (``RateLimits``, an aiohttp trace on discord.py's session) and each
streamed reply plans with its bucket (``EditBudget``): an edit on the way is skipped (the text it would have shown
waits for the next one: edits coalesce) unless the bucket has room for it *and* for the last edit of every answer
streaming into that bucket, plus one request never spent, so that discord.py never has to wait on an empty bucket.

Source: Discord's "Rate Limits" page (discord/discord-api-docs ``developers/topics/rate-limits.mdx``): the headers
(``X-RateLimit-Limit``, ``-Remaining``, ``-Reset-After`` in seconds, ``-Bucket``, an opaque id "non-inclusive of
top-level resources"), buckets per route *and* top-level resource (channel_id, guild_id, webhook_id + webhook_token),
"rate limits should not be hard coded into your app. Instead, your app should parse response headers": no numbers
here, only what the headers say.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp

log = logging.getLogger(__name__)

MAX_BUCKETS = 2000  # buckets remembered (one per channel and per interaction token used); past it, reset ones go
KEPT_UNSPENT = 1  # requests of a bucket a plan never uses: the request that empties a bucket waits in discord.py

# Routes as the budgets name them (``route_of``): a message's edit and creation, in a channel and through an
# interaction's webhook (its @original and its followups).
CHANNEL_EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"
CHANNEL_CREATE = "POST /channels/{channel_id}/messages"
WEBHOOK_EDIT = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
WEBHOOK_CREATE = "POST /webhooks/{webhook_id}/{webhook_token}"

_TOKEN_ROUTE = re.compile(r"^/(webhooks|interactions)/(\d+)/([^/]+)")
_RESOURCE_ROUTE = re.compile(r"^/(channels|guilds)/(\d+)")


def route_of(method: str, path: str) -> tuple[str, str]:
    """(route, major parameter) of a request: ``("PATCH", "/api/v10/channels/1/messages/2")`` ->
    ``("PATCH /channels/{channel_id}/messages/{message_id}", "1")``; a webhook's major parameter is
    ``"<webhook_id>+<webhook_token>"`` (an interaction's: its application id or interaction id, and its token), as
    discord.py's ``Route.major_parameters`` writes it; ``""`` when the route has none."""
    path = re.sub(r"^/api/v\d+", "", path)
    major = ""
    if match := _TOKEN_ROUTE.match(path):
        major = f"{match[2]}+{match[3]}"
        path = f"/{match[1]}/{{webhook_id}}/{{webhook_token}}{path[match.end():]}"
    elif match := _RESOURCE_ROUTE.match(path):
        major = match[2]
        path = f"/{match[1]}/{{{match[1][:-1]}_id}}{path[match.end():]}"
    path = re.sub(r"/messages/(\d+|@original)", "/messages/{message_id}", path)
    path = re.sub(r"/\d+(?=/|$)", "/{id}", path)
    return f"{method} {path}", major


@dataclass
class Bucket:
    """One bucket as its latest response described it: ``limit`` requests per window, ``remaining`` in the current
    one (less what the bot has spent since), which ends at ``resets_at`` (``time.monotonic()`` seconds; None: not
    known yet); ``window_s``, the longest Reset-After seen (the window's length, as far as the bot can tell)."""

    limit: int
    remaining: int
    resets_at: float | None
    window_s: float

    def available(self, now: float) -> int:
        """Requests the bucket takes at ``now``: all of them once its window has ended."""
        if self.resets_at is not None and now >= self.resets_at:
            return self.limit
        return self.remaining

    def spend(self, count: int, now: float) -> None:
        """Count ``count`` requests sent at ``now`` before their responses say so."""
        if self.resets_at is not None and now >= self.resets_at:
            self.remaining, self.resets_at = self.limit, None  # a new window, started by these requests
        self.remaining = max(0, self.remaining - count)

    def seconds_to_room(self, count: int, now: float) -> float:
        """Seconds until the bucket takes ``count`` requests (0.0: now; at most its window)."""
        if self.available(now) >= count or self.resets_at is None:
            return 0.0
        return max(0.0, self.resets_at - now)


class RateLimits:
    """The buckets the bot's requests went to, as Discord's response headers describe them, and the 429s received.

    ``trace_config()`` is given to the discord.py client (``http_trace``): every response of its session (REST,
    interaction callbacks and webhooks) updates the bucket of its route and major parameter. ``received_429``: the
    429 responses seen; ``waited_s``: the sum of their ``retry_after`` (seconds discord.py was told to wait).
    Bounded: at most MAX_BUCKETS buckets (those whose window has ended are forgotten first). ``clock`` (seconds) and
    ``sleep`` are the time the budgets plan with (tests give their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.clock = clock
        self._sleep = sleep
        self._hash_of: dict[str, str] = {}  # route -> X-RateLimit-Bucket (routes are few: the ones the bot uses)
        self._buckets: dict[tuple[str, str], Bucket] = {}  # (bucket hash or route, major parameter) -> bucket
        self._streaming: collections.Counter[tuple[str, str]] = collections.Counter()
        self.received_429 = 0
        self.waited_s = 0.0

    def trace_config(self) -> aiohttp.TraceConfig:
        """An aiohttp trace that feeds every response to ``observe`` (and reads a 429's body for its retry_after)."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(session: aiohttp.ClientSession, context: SimpleNamespace,
                                 params: aiohttp.TraceRequestEndParams) -> None:
            response = params.response
            retry_after = None
            if response.status == 429:
                try:  # aiohttp keeps the body: discord.py reads it again
                    retry_after = float(json.loads(await response.read()).get("retry_after", 0.0))
                except (ValueError, AttributeError, aiohttp.ClientError):
                    retry_after = None
            self.observe(params.method, params.url.path, response.status, response.headers, retry_after=retry_after)

        trace.on_request_end.append(on_request_end)
        return trace

    def observe(self, method: str, path: str, status: int, headers: Mapping[str, str], *,
                retry_after: float | None = None) -> None:
        """Record a response to ``method path``: its bucket from the X-RateLimit headers (none: nothing to learn),
        and a 429 with the seconds it said to wait (``retry_after``, else its Retry-After header)."""
        if status == 429:
            self.received_429 += 1
            if retry_after is None:
                try:
                    retry_after = float(headers.get("Retry-After", 0))
                except ValueError:
                    retry_after = 0.0
            self.waited_s += retry_after
            log.info("429 for %s %s: waiting %.2f s (%s)", method, route_of(method, path)[0], retry_after,
                     headers.get("X-RateLimit-Scope", "unknown scope"))
        try:
            limit = int(headers["X-RateLimit-Limit"])
            remaining = int(headers["X-RateLimit-Remaining"])
            reset_after = float(headers["X-RateLimit-Reset-After"])
        except (KeyError, ValueError):
            return
        route, major = route_of(method, path)
        bucket_hash = headers.get("X-RateLimit-Bucket")
        if bucket_hash:
            self._hash_of[route] = bucket_hash
        key = (bucket_hash or route, major)
        now = self.clock()
        resets_at = now + reset_after
        bucket = self._buckets.get(key)
        if bucket is None:
            self._prune(now)
            self._buckets[key] = Bucket(limit, remaining, resets_at, reset_after)
            return
        same_window = bucket.resets_at is not None and abs(bucket.resets_at - resets_at) < 0.25
        bucket.limit, bucket.window_s = limit, max(bucket.window_s, reset_after)
        # In the same window the lower count wins: requests spent since may not have been answered yet.
        bucket.remaining = min(bucket.remaining, remaining) if same_window else remaining
        bucket.resets_at = resets_at

    def bucket(self, major: str, *routes: str) -> Bucket | None:
        """The bucket of the first of ``routes`` (with major parameter ``major``) that a response described."""
        for route in routes:
            found = self._buckets.get((self._hash_of.get(route, route), major))
            if found is not None:
                return found
        return None

    def streaming_replies(self, key: tuple[str, str]) -> int:
        """How many replies stream into the bucket of ``key`` (route, major parameter) now."""
        return self._streaming[key]

    @contextmanager
    def streaming(self, key: tuple[str, str]) -> Iterator[None]:
        """Count one more reply streaming into the bucket of ``key`` while the block runs."""
        self._streaming[key] += 1
        try:
            yield
        finally:
            self._streaming[key] -= 1
            if self._streaming[key] <= 0:
                del self._streaming[key]

    def budget(self, major: str, *routes: str) -> EditBudget:
        """The budget of a reply whose requests go to the bucket of ``routes`` (its edit route first) and ``major``."""
        return EditBudget(self, major, routes)

    def _prune(self, now: float) -> None:
        if len(self._buckets) < MAX_BUCKETS:
            return
        for key in [k for k, b in self._buckets.items() if b.resets_at is None or b.resets_at <= now]:
            del self._buckets[key]
        while len(self._buckets) >= MAX_BUCKETS:  # all still live (a flood): the oldest go
            del self._buckets[next(iter(self._buckets))]


class EditBudget:
    """The share of one bucket a streamed reply plans its edits with (``bot.streaming.StreamedReply``).

    ``allows(cost)``: whether ``cost`` optional requests (an edit on the way) fit now, leaving room for the last edit
    of every reply streaming into the bucket and KEPT_UNSPENT more; ``gap_s()``: the seconds between this reply's
    optional edits that spread the bucket's spare requests over its window, shared with the other streaming replies;
    ``wait_for_room(cost)``: wait (at most the bucket's window) until ``cost`` requests that must be made (a last
    edit, a new message) fit, KEPT_UNSPENT left over; ``spend(cost)``: count requests made. An unknown bucket (no
    response described it yet) allows everything: its first response will say.
    """

    def __init__(self, limits: RateLimits, major: str, routes: tuple[str, ...]) -> None:
        self._limits = limits
        self._major = major
        self._routes = routes
        self._key = (routes[0] if routes else "", major)

    @property
    def clock(self) -> Callable[[], float]:
        """The clock (seconds) the budget plans with: the reply's interval is measured with it too."""
        return self._limits.clock

    def _bucket(self) -> Bucket | None:
        return self._limits.bucket(self._major, *self._routes)

    def _reserved(self) -> int:
        return max(1, self._limits.streaming_replies(self._key)) + KEPT_UNSPENT

    def allows(self, cost: int) -> bool:
        """Whether ``cost`` optional requests fit now (see the class docstring)."""
        bucket = self._bucket()
        return bucket is None or bucket.available(self._limits.clock()) - self._reserved() >= cost

    def gap_s(self) -> float:
        """Seconds between two optional edits of this reply: the time left in the bucket's window (a whole window
        once it has ended) over this reply's share of the spare requests; 0.0 for an unknown bucket."""
        bucket = self._bucket()
        if bucket is None:
            return 0.0
        now = self._limits.clock()
        spare = bucket.available(now) - self._reserved()
        if spare <= 0:
            return bucket.seconds_to_room(bucket.limit, now) or bucket.window_s
        live = bucket.resets_at is not None and now < bucket.resets_at
        left = (bucket.resets_at - now) if live and bucket.resets_at is not None else bucket.window_s
        return left * max(1, self._limits.streaming_replies(self._key)) / spare

    def seconds_to_room(self, cost: int) -> float:
        """Seconds until ``cost`` requests fit in the bucket with KEPT_UNSPENT left over (0.0: now, or an unknown
        bucket; at most the bucket's window)."""
        bucket = self._bucket()
        if bucket is None:
            return 0.0
        return bucket.seconds_to_room(min(cost + KEPT_UNSPENT, bucket.limit), self._limits.clock())

    async def wait_for_room(self, cost: int) -> None:
        """Wait until the bucket takes ``cost`` requests and keeps KEPT_UNSPENT (at most its window): discord.py then
        sends them at once, neither meeting a 429 on a route it has not learnt shares this bucket nor holding the
        request that empties the bucket until the window ends."""
        delay = self.seconds_to_room(cost)
        if delay > 0:
            await self._limits._sleep(delay)

    def spend(self, cost: int) -> None:
        """Count ``cost`` requests made to the bucket (their responses will correct the count)."""
        bucket = self._bucket()
        if bucket is not None and cost > 0:
            bucket.spend(cost, self._limits.clock())

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """While a reply streams into the bucket: each streaming reply keeps one request for its last edit."""
        with self._limits.streaming(self._key):
            yield
