"""The bot's picture of Discord's rate limits (``bot/ratelimits.py``) and a streamed reply planning its edits with
it (``bot/streaming.py``): the bucket each response describes, the budget's room for edits on the way and for the
last edits, and edits coalescing when the bucket has none to spare. The Discord side is a bucket kept like the
sandbox's (``sandbox.ratelimits``), answered with its headers, on a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from bot.ratelimits import CHANNEL_CREATE, CHANNEL_EDIT, WEBHOOK_EDIT, RateLimits, route_of
from bot.streaming import CURSOR, StreamedReply


class Clock:
    """A clock the test moves; ``sleep`` moves it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def headers(limit: int, remaining: int, reset_after: float, bucket: str = "abc") -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset-After": str(reset_after), "X-RateLimit-Bucket": bucket}


def test_routes_are_named_with_their_major_parameter() -> None:
    assert route_of("PATCH", "/api/v10/channels/12/messages/34") == (CHANNEL_EDIT, "12")
    assert route_of("POST", "/api/v10/channels/12/messages") == (CHANNEL_CREATE, "12")
    assert route_of("PATCH", "/api/v10/webhooks/5/tok-en/messages/@original") == (WEBHOOK_EDIT, "5+tok-en")
    assert route_of("POST", "/api/v10/interactions/7/tok/callback") == (
        "POST /interactions/{webhook_id}/{webhook_token}/callback", "7+tok")
    assert route_of("GET", "/api/v10/guilds/3/members/9") == ("GET /guilds/{guild_id}/members/{id}", "3")
    assert route_of("GET", "/api/v10/users/@me") == ("GET /users/@me", "")


def test_a_response_describes_its_bucket_shared_by_routes_with_the_same_hash() -> None:
    clock = Clock()
    limits = RateLimits(clock)
    limits.observe("POST", "/api/v10/channels/12/messages", 200, headers(5, 4, 5.0))
    # The edit route has not been seen: the budget falls back to the creation route's bucket.
    budget = limits.budget("12", CHANNEL_EDIT, CHANNEL_CREATE)
    bucket = limits.bucket("12", CHANNEL_EDIT, CHANNEL_CREATE)
    assert bucket is not None and (bucket.limit, bucket.remaining, bucket.resets_at) == (5, 4, 105.0)
    limits.observe("PATCH", "/api/v10/channels/12/messages/1", 200, headers(5, 3, 5.0))
    assert limits.bucket("12", CHANNEL_EDIT) is bucket and bucket.remaining == 3
    # Another channel is another bucket; a response without headers teaches nothing.
    assert limits.bucket("13", CHANNEL_EDIT) is None
    limits.observe("GET", "/api/v10/users/@me", 200, {})
    assert limits.received_429 == 0
    # Spent but not yet answered: a response of the same window does not give the request back.
    budget.spend(2)
    limits.observe("PATCH", "/api/v10/channels/12/messages/1", 200, headers(5, 2, 5.0))
    assert bucket.remaining == 1
    # Once the window has ended the whole bucket is there again.
    clock.now = 106.0
    assert bucket.available(clock.now) == 5


def test_429s_are_counted_with_the_time_they_said_to_wait() -> None:
    limits = RateLimits(Clock())
    limits.observe("PATCH", "/api/v10/channels/12/messages/1", 429, {**headers(5, 0, 1.5), "Retry-After": "2"},
                   retry_after=1.5)
    limits.observe("GET", "/api/v10/channels/12", 429, {"Retry-After": "1", "X-RateLimit-Global": "true"})
    assert limits.received_429 == 2 and limits.waited_s == 2.5


def test_the_budget_keeps_room_for_every_streaming_reply_and_one_more() -> None:
    clock = Clock()
    limits = RateLimits(clock)
    limits.observe("POST", "/api/v10/channels/12/messages", 200, headers(5, 4, 5.0))
    first, second = (limits.budget("12", CHANNEL_EDIT, CHANNEL_CREATE) for _ in range(2))
    with first.streaming():
        assert first.allows(2) and not first.allows(3)  # 4 left: 1 for its last edit, 1 never spent
        assert first.gap_s() == 2.5  # 2 to spare in the 5 s left
        with second.streaming():
            assert first.allows(1) and not first.allows(2)
            assert first.gap_s() == 10.0  # the one spare request shared by two replies
    # The last edits: room now with 2 left; none with 1 (it would empty the bucket) until the window ends.
    assert first.seconds_to_room(1) == 0.0
    first.spend(3)
    assert first.seconds_to_room(1) == 5.0
    clock.now = 105.0
    assert first.seconds_to_room(1) == 0.0
    # Unknown buckets allow everything; their first response will tell.
    unknown = limits.budget("99", CHANNEL_EDIT)
    assert unknown.allows(10) and unknown.gap_s() == 0.0 and unknown.seconds_to_room(10) == 0.0


class Channel:
    """Discord's side of one channel's bucket for the reply's messages: a fixed window of ``limit`` requests per
    ``window_s`` started by its first request, answered with its headers into ``limits``, as the sandbox does."""

    def __init__(self, limits: RateLimits, clock: Clock, limit: int = 5, window_s: float = 5.0) -> None:
        self.limits, self.clock, self.limit, self.window_s = limits, clock, limit, window_s
        self.count, self.ends = 0, 0.0
        self.contents: list[str] = []
        self.requests: list[float] = []
        self.refused = 0

    def _request(self, method: str, path: str) -> None:
        now = self.clock()
        if now >= self.ends:
            self.count, self.ends = 0, now + self.window_s
        if self.count >= self.limit:
            self.refused += 1
            self.limits.observe(method, path, 429, headers(self.limit, 0, self.ends - now), retry_after=self.ends - now)
            raise AssertionError(f"429 at {now}: the reply planned more than its bucket allows")
        self.count += 1
        self.requests.append(now)
        self.limits.observe(method, path, 200, headers(self.limit, self.limit - self.count, self.ends - now))

    async def send(self, content: str) -> Message:
        self._request("POST", "/api/v10/channels/12/messages")
        self.contents.append(content)
        return Message(self, len(self.contents) - 1)


class Message:
    def __init__(self, channel: Channel, index: int) -> None:
        self.channel, self.index = channel, index

    async def edit(self, *, content: str) -> Message:
        self.channel._request("PATCH", "/api/v10/channels/12/messages/1")
        self.channel.contents[self.index] = content
        return self


async def tokens(clock: Clock, words: list[str], every_s: float) -> AsyncGenerator[str, None]:
    for word in words:
        clock.now += every_s
        yield word + " "
        await asyncio.sleep(0)


async def test_a_streamed_answer_plans_its_edits_within_its_bucket() -> None:
    """A 10 s answer at an interval of 0.2 s would make 50 edits; on a bucket of 5 per 5 s the reply makes what
    fits, spread out, never meets a 429 and shows the whole answer at the end."""
    clock = Clock()
    limits = RateLimits(clock, clock.sleep)
    channel = Channel(limits, clock)
    reply = StreamedReply(channel.send, channel.send, interval_s=0.2,
                          budget=limits.budget("12", CHANNEL_EDIT, CHANNEL_CREATE))
    words = [f"w{i}" for i in range(200)]
    answer = await reply.stream(tokens(clock, words, 0.05))
    assert answer is not None and channel.refused == 0
    assert channel.contents == [" ".join(words) + " "]
    assert clock.slept == 0.0  # the last edit found room: it did not wait
    assert not any(CURSOR in content for content in channel.contents)
    assert 5 <= len(channel.requests) <= 10  # 10 s: two windows of at most 3 planned edits, the first, the last
    for start in channel.requests:
        assert sum(start <= t < start + 5.0 for t in channel.requests) <= 4  # one request always left unspent
