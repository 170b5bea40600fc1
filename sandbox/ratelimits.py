"""Discord's HTTP rate limits as the sandbox applies them: per-route buckets and the global limit, with Discord's
headers and 429 responses, so that the real discord.py client meets them here as it would on Discord.

Source: Discord's "Rate Limits" page (``discord/discord-api-docs`` ``developers/topics/rate-limits.mdx``, read at
commit c98d64b, August 2026), and for the interaction endpoints ``developers/interactions/receiving-and-responding.mdx``
("Followup Messages", "Endpoints").

- **Per-route buckets.** A bucket is one route (or a group of routes sharing one ``X-RateLimit-Bucket`` hash) *and*
  its top-level resource, the "major parameter": ``channel_id``, ``guild_id``, or ``webhook_id + webhook_token``
  (an interaction's followups and its callback are keyed by their token: "Interactions webhooks share the same
  rate limit properties as normal webhooks"). A bucket counts requests in a fixed window that starts with its first
  request; when ``limit`` were made, the next ones get a 429 until the window ends.
- **Global limit.** "All bots can make up to 50 requests per second to our API ... independent of any individual
  rate limit on a route"; "Interaction endpoints are not bound to the bot's Global Rate Limit" (the callback and
  the ``/webhooks/{application.id}/{interaction.token}`` routes; the sandbox has no other webhooks).
- **Headers** on every limited response: ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` (epoch seconds),
  ``-Reset-After`` (seconds, millisecond precision), ``-Bucket``; on a 429 also ``X-RateLimit-Scope`` (``user``
  for a per-route limit, ``global``), ``Retry-After`` (whole seconds, rounded up) and, for the global limit,
  ``X-RateLimit-Global: true``; the body is ``{"message", "retry_after", "global"}``.
- ``Via: 1.1 google`` on every API response, as Discord's load balancer adds: discord.py takes a 429 *without*
  ``Via`` for a Cloudflare ban and raises instead of waiting (``discord/http.py``, ``HTTPClient.request``).

The numbers: Discord publishes no per-route figures ("rate limits should not be hard coded into your app"; its
header example shows ``X-RateLimit-Limit: 5``); 5 requests per 5 s per channel for creating and editing messages
and per webhook token is what Discord commonly returns for those routes (the numbers issue 19 asks for). Creating
and editing a channel's messages are two buckets (two routes, each per channel), as Discord's differing bucket ids
for them show; one shared bucket would be stricter, but discord.py keeps to a bucket shared by two routes badly (it
keeps a count per route until both have answered, then swaps one for the other: 21 429s for 40 quick sends and
edits of one channel), which Discord does not make it meet for these routes. An interaction's routes are one bucket
per token, as discord.py's webhook adapter keys them. Other routes get a bucket of ``route_limit`` per
``route_window_s`` (a generous stand-in for the figures Discord does not publish). The global limit, 50 per second,
is the documented one.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_BUCKETS = 10_000  # buckets kept; past this, ended windows are forgotten
MAX_HITS = 10_000  # the 429s remembered one by one (the count goes on)
GLOBAL_EXEMPT_PREFIXES = ("/interactions/", "/webhooks/")  # interaction endpoints: not under the global limit
RATE_LIMITED = "You are being rate limited."  # Discord's 429 message (rate-limits.mdx, its examples)


@dataclass
class RateLimitSettings:
    """The sandbox's rate limits; change them on ``Sandbox.rate_limits.settings`` at any time.

    enabled: False serves every request with no limit and no rate-limit header (a test that needs it off).
    message_limit / message_window_s: requests per window (s) of creating (``POST /channels/{id}/messages``) and,
    separately, of editing (``PATCH /channels/{id}/messages/{id}``) a channel's messages, per channel.
    webhook_limit / webhook_window_s: the same per interaction token (its callback; its followups, ``@original`` and
    followup edits: one bucket per ``webhook_id + webhook_token``). route_limit / route_window_s:
    every other route, per route and major parameter. global_limit / global_window_s: all the bot's requests but
    the interaction endpoints, together (Discord: 50 per second).
    """

    enabled: bool = True
    message_limit: int = 5
    message_window_s: float = 5.0
    webhook_limit: int = 5
    webhook_window_s: float = 5.0
    route_limit: int = 50
    route_window_s: float = 1.0
    global_limit: int = 50
    global_window_s: float = 1.0


@dataclass(frozen=True)
class RateLimitHit:
    """One 429 the sandbox served: when (``t``, ``time.monotonic()`` seconds), which route (``"PATCH
    /channels/<id>/messages/<id>"``), its bucket hash (None for the global limit), ``scope`` (``user`` or
    ``global``) and ``retry_after_s``, the seconds the client was told to wait."""

    t: float
    route: str
    bucket: str | None
    scope: str
    retry_after_s: float


@dataclass
class _Window:
    """A fixed window: ``count`` requests made in it so far; it ends at ``ends`` (monotonic seconds)."""

    limit: int
    window_s: float
    count: int = 0
    ends: float = 0.0

    def take(self, now: float) -> float:
        """Count one request at ``now``; returns 0.0, or the seconds to wait when the window is full (not counted)."""
        if now >= self.ends:
            self.count, self.ends = 0, now + self.window_s
        if self.count >= self.limit:
            return self.ends - now
        self.count += 1
        return 0.0


@dataclass(frozen=True)
class Verdict:
    """What the limiter decided for one request: ``headers`` to add to the response; ``retry_after_s`` > 0 with
    ``scope`` when it is refused with a 429."""

    headers: dict[str, str] = field(default_factory=dict)
    retry_after_s: float = 0.0
    scope: str = ""

    @property
    def limited(self) -> bool:
        return self.retry_after_s > 0

    def body(self) -> dict[str, object]:
        """The 429's JSON body (rate-limits.mdx, "Rate Limit Response Structure"), with the ``code`` (0) that
        Discord's API description requires of every error body (``RatelimitedResponse``)."""
        return {"message": RATE_LIMITED, "retry_after": self.retry_after_s, "global": self.scope == "global",
                "code": 0}


def _bucket_hash(group: str) -> str:
    """A stable opaque ``X-RateLimit-Bucket`` value for a group of routes (Discord's are opaque hex strings)."""
    return hashlib.sha1(group.encode()).hexdigest()[:16]


def _ceil_ms(seconds: float) -> float:
    """Seconds rounded *up* to the millisecond: a client that waits exactly this long is past the window's end."""
    return math.ceil(seconds * 1000) / 1000


class RateLimiter:
    """Discord's per-route and global rate limits over the sandbox's REST API (see the module docstring).

    ``check(method, template, params)`` is called once per API request, before it is handled: ``template`` is the
    route as registered (``/channels/{channel_id}/messages``), ``params`` its path parameters. ``served_429`` counts
    the 429s served since start; ``hits`` keeps the latest MAX_HITS of them.
    """

    def __init__(self, settings: RateLimitSettings | None = None) -> None:
        self.settings = settings or RateLimitSettings()
        self.served_429 = 0
        self.hits: deque[RateLimitHit] = deque(maxlen=MAX_HITS)
        self._buckets: dict[tuple[str, str], _Window] = {}
        self._global = _Window(self.settings.global_limit, self.settings.global_window_s)

    def reset(self) -> None:
        """Forget every bucket and the global window (the counters of 429s stay)."""
        self._buckets.clear()
        self._global = _Window(self.settings.global_limit, self.settings.global_window_s)

    def _group(self, method: str, template: str) -> tuple[str, int, float]:
        """(group name, limit, window in s) of a route: creating or editing a channel's messages, an interaction
        token's routes, or any other route."""
        s = self.settings
        if template.startswith(("/webhooks/", "/interactions/")):
            return "webhook", s.webhook_limit, s.webhook_window_s
        if (method, template) in (("POST", "/channels/{channel_id}/messages"),
                                  ("PATCH", "/channels/{channel_id}/messages/{message_id}")):
            return f"{method} channel-messages", s.message_limit, s.message_window_s
        return f"{method} {template}", s.route_limit, s.route_window_s

    @staticmethod
    def _major(params: Mapping[str, str]) -> str:
        """The top-level resource of a request (rate-limits.mdx: channels, guilds, webhook id + token)."""
        if "token" in params:
            owner = params.get("app_id") or params.get("interaction_id") or ""
            return f"{owner}+{params['token']}"
        return params.get("channel_id") or params.get("guild_id") or ""

    def check(self, method: str, template: str, params: Mapping[str, str], *, route: str) -> Verdict:
        """Count a request (``route``: how a 429 is recorded, e.g. ``"PATCH /channels/<id>/messages/<id>"``);
        returns its Verdict. Requests refused with a 429 are not counted in any window."""
        s = self.settings
        if not s.enabled:
            return Verdict()
        now = time.monotonic()
        group, limit, window_s = self._group(method, template)
        key = (group, self._major(params))
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit or bucket.window_s != window_s:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets = {k: b for k, b in self._buckets.items() if b.ends > now}
            bucket = self._buckets[key] = _Window(limit, window_s)
        bucket_hash = _bucket_hash(group)
        if not template.startswith(GLOBAL_EXEMPT_PREFIXES):
            if (self._global.limit, self._global.window_s) != (s.global_limit, s.global_window_s):
                self._global = _Window(s.global_limit, s.global_window_s)
            if now >= bucket.ends or bucket.count < bucket.limit:  # only a request the bucket takes counts globally
                wait = self._global.take(now)
                if wait:
                    return self._refuse(now, route, None, "global", wait, {"X-RateLimit-Global": "true"})
        wait = bucket.take(now)
        reset_after = _ceil_ms(bucket.ends - now)
        headers = {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.limit - bucket.count),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket_hash,
        }
        if wait:
            return self._refuse(now, route, bucket_hash, "user", wait, headers)
        return Verdict(headers)

    def _refuse(self, now: float, route: str, bucket_hash: str | None, scope: str, wait_s: float,
                headers: dict[str, str]) -> Verdict:
        retry_after = _ceil_ms(wait_s)
        self.served_429 += 1
        self.hits.append(RateLimitHit(now, route, bucket_hash, scope, retry_after))
        headers = {**headers, "X-RateLimit-Scope": scope, "Retry-After": str(math.ceil(retry_after))}
        return Verdict(headers, retry_after, scope)
