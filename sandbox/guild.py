"""The fixed simulated guild of the sandbox, and the Discord API v10 payloads that describe it.

Every id is a fixed snowflake so that tests, scripts and logs can name them:

=========================  =====================  =================================================
what                       id                     notes
=========================  =====================  =================================================
guild "Sandbox"            1100000000000000001    ``GUILD_ID``; owned by ``owner``
bot user "Assistant"       1100000000000000002    ``BOT_USER_ID``; also the application id
role @everyone             1100000000000000001    = guild id; view, send, embed links, attach files,
                                                  add reactions, read history, connect, speak,
                                                  voice activity, use application commands
role "Admin"               1100000000000000010    ``ADMIN_ROLE_ID``; MANAGE_GUILD | MANAGE_MESSAGES
member ``owner``           1100000000000000020    guild owner (all permissions, as on Discord); no role
member ``admin``           1100000000000000021    has the Admin role
member ``alice``           1100000000000000022    plain member
member ``bob``             1100000000000000023    plain member
member ``member-N``        1100000000100000000+N  N = 1 .. 100000: plain members, made when first named
text channel ``general``   1100000000000000030    system channel
text channel ``random``    1100000000000000031
voice channel ``Lounge``   1100000000000000032    type 2; everyone may connect and speak
voice channel ``Quiet``    1100000000000000033    ``QUIET_CHANNEL_ID``; @everyone overwrite denies SPEAK
voice channel ``Private``  1100000000000000034    ``PRIVATE_CHANNEL_ID``; @everyone overwrite denies CONNECT
voice channel ``Games``    1100000000000000035    ``GAMES_CHANNEL_ID``; a second open voice channel
=========================  =====================  =================================================

``Quiet`` and ``Private`` exist so that the bot can be refused: it may join ``Quiet`` but what it sends there
is dropped (no SPEAK), and it cannot join ``Private`` (no CONNECT). Members can be placed in either through the
sandbox API, which does not check permissions (a member's client would be refused by Discord itself).

The numbered members stand for the crowd of a big server (a flood of distinct members, say): each is a plain
member with no role, joined at ``JOINED_AT``, made when first named (``member_by_name("member-1234")``, or its
id). They count in ``member_count`` (so the guild is "large"), but like offline members of a large guild they
are not in GUILD_CREATE's member list (unless in voice) nor in a chunk of every member; a member request by
id or by name prefix finds them.

The owner is a member of its own (rather than ``admin``) so that the admin's rights come from the Admin
role alone, which is the path the bot's admin check must handle. The bot has no role besides @everyone,
so, like a freshly invited bot, it cannot delete other members' messages.

Payload builders return fresh dicts (callers may mutate them); ids are strings, as on the wire.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

GUILD_ID = 1100000000000000001
GUILD_NAME = "Sandbox"
BOT_USER_ID = 1100000000000000002
APPLICATION_ID = BOT_USER_ID
BOT_NAME = "Assistant"
EVERYONE_ROLE_ID = GUILD_ID
ADMIN_ROLE_ID = 1100000000000000010

OWNER_USER_ID = 1100000000000000020
ADMIN_USER_ID = 1100000000000000021
ALICE_USER_ID = 1100000000000000022
BOB_USER_ID = 1100000000000000023

# Numbered members: member-N has the id NUMBERED_MEMBER_ID_BASE + N, clear of the fixed ids above and of the
# sandbox's time-based snowflakes (which start far higher).
NUMBERED_MEMBER_MAX = 100_000
NUMBERED_MEMBER_ID_BASE = 1100000000100000000

GENERAL_CHANNEL_ID = 1100000000000000030
RANDOM_CHANNEL_ID = 1100000000000000031
LOUNGE_CHANNEL_ID = 1100000000000000032
QUIET_CHANNEL_ID = 1100000000000000033
PRIVATE_CHANNEL_ID = 1100000000000000034
GAMES_CHANNEL_ID = 1100000000000000035

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADD_REACTIONS = 1 << 6
MANAGE_GUILD = 1 << 5
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
CONNECT = 1 << 20
SPEAK = 1 << 21
USE_VAD = 1 << 25
USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | ADD_REACTIONS
    | READ_MESSAGE_HISTORY
    | CONNECT
    | SPEAK
    | USE_VAD
    | USE_APPLICATION_COMMANDS
)
ADMIN_PERMISSIONS = MANAGE_GUILD | MANAGE_MESSAGES

# Gateway intents that change what the sandbox sends.
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_VOICE_STATES = 1 << 7
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT
"""The privileged intents: an IDENTIFY asking for one the application was not granted is closed with 4014."""

# Application flags saying which privileged intents the Developer Portal grants: the _LIMITED ones are those of an
# application in fewer than 100 servers (its owner ticks them on the Bot page), as the sandbox's one-guild app is;
# GATEWAY_MESSAGE_CONTENT (1 << 18) is the approved intent of a verified application in 100 or more.
APP_FLAG_GATEWAY_PRESENCE_LIMITED = 1 << 13
APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED = 1 << 15
APP_FLAG_GATEWAY_MESSAGE_CONTENT = 1 << 18
APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19

# Channel types of direct messages (DM, group DM): content there reaches the bot without the Message Content intent.
DM_CHANNEL_TYPES = (1, 3)

# The bot and the members all "joined" at this fixed time, so payloads are reproducible.
JOINED_AT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).isoformat()


@dataclass(frozen=True)
class SimUser:
    """A user of the simulated guild; ``role_ids`` excludes @everyone, as in Discord member payloads."""

    id: int
    name: str
    bot: bool = False
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Overwrite:
    """A channel permission overwrite: ``target`` is a role id (``kind`` 0) or a member id (``kind`` 1)."""

    target: int
    kind: int
    allow: int = 0
    deny: int = 0


@dataclass(frozen=True)
class SimChannel:
    """A guild channel; ``type`` is Discord's channel type (0 text, 2 voice, 11/12 thread, whose ``parent_id`` is
    its text channel; threads live in ``sandbox.threads``)."""

    id: int
    name: str
    type: int
    position: int
    overwrites: tuple[Overwrite, ...] = ()
    parent_id: int | None = None

    @property
    def is_thread(self) -> bool:
        return self.type in (11, 12)

    @property
    def is_voice(self) -> bool:
        return self.type == 2


BOT = SimUser(BOT_USER_ID, BOT_NAME, bot=True)
MEMBERS: dict[str, SimUser] = {
    "owner": SimUser(OWNER_USER_ID, "owner"),
    "admin": SimUser(ADMIN_USER_ID, "admin", role_ids=(ADMIN_ROLE_ID,)),
    "alice": SimUser(ALICE_USER_ID, "alice"),
    "bob": SimUser(BOB_USER_ID, "bob"),
}
CHANNELS: dict[str, SimChannel] = {
    "general": SimChannel(GENERAL_CHANNEL_ID, "general", 0, 0),
    "random": SimChannel(RANDOM_CHANNEL_ID, "random", 0, 1),
    "Lounge": SimChannel(LOUNGE_CHANNEL_ID, "Lounge", 2, 2),
    "Quiet": SimChannel(QUIET_CHANNEL_ID, "Quiet", 2, 3, (Overwrite(EVERYONE_ROLE_ID, 0, deny=SPEAK),)),
    "Private": SimChannel(PRIVATE_CHANNEL_ID, "Private", 2, 4, (Overwrite(EVERYONE_ROLE_ID, 0, deny=CONNECT),)),
    "Games": SimChannel(GAMES_CHANNEL_ID, "Games", 2, 5),
}
ROLES: dict[int, tuple[str, int, int]] = {  # id -> (name, permissions, position)
    EVERYONE_ROLE_ID: ("@everyone", EVERYONE_PERMISSIONS, 0),
    ADMIN_ROLE_ID: ("Admin", ADMIN_PERMISSIONS, 1),
}
MEMBER_COUNT = 1 + len(MEMBERS) + NUMBERED_MEMBER_MAX  # the bot, the fixed members, the numbered ones
LARGE_THRESHOLD = 250  # discord.py IDENTIFYs with large_threshold 250
MEMBER_NAMES = f"{', '.join(MEMBERS)}, member-1 .. member-{NUMBERED_MEMBER_MAX}"
_NUMBERED_NAME = re.compile(r"member-([1-9][0-9]*)")


class UnknownName(LookupError):
    """A member, channel or role name that the simulated guild does not have; the message lists valid ones."""


def member_by_name(name: str) -> SimUser:
    """The member called ``name`` (case-insensitive; a leading ``@`` is ignored): a fixed member or a numbered one,
    ``member-N`` with N in 1 .. NUMBERED_MEMBER_MAX written without leading zeros; raises UnknownName."""
    key = name.strip().lstrip("@").lower()
    for member in MEMBERS.values():
        if member.name.lower() == key:
            return member
    numbered = _NUMBERED_NAME.fullmatch(key)
    if numbered is not None and int(numbered.group(1)) <= NUMBERED_MEMBER_MAX:
        return numbered_member(int(numbered.group(1)))
    raise UnknownName(f"no member named {name!r}; members are: {MEMBER_NAMES}")


def numbered_member(number: int) -> SimUser:
    """``member-<number>``: a plain member (no role) with the id NUMBERED_MEMBER_ID_BASE + number.

    Made on each call (it is a frozen value: two calls give equal members); raises UnknownName when ``number`` is
    outside 1 .. NUMBERED_MEMBER_MAX.
    """
    if not 1 <= number <= NUMBERED_MEMBER_MAX:
        raise UnknownName(f"numbered members go from member-1 to member-{NUMBERED_MEMBER_MAX}, not member-{number}")
    return SimUser(NUMBERED_MEMBER_ID_BASE + number, f"member-{number}")


def members_named_like(prefix: str) -> Iterator[SimUser]:
    """Members whose name starts with ``prefix`` (case-insensitive): the bot and the fixed members, then the
    numbered ones in number order (lazily: take what you need)."""
    key = prefix.lower()
    yield from (m for m in (BOT, *MEMBERS.values()) if m.name.lower().startswith(key))
    if "member-".startswith(key[:7]):
        yield from (numbered_member(n) for n in range(1, NUMBERED_MEMBER_MAX + 1) if f"member-{n}".startswith(key))


def channel_by_name(name: str) -> SimChannel:
    """The channel called ``name`` (case-insensitive; a leading ``#`` is ignored); raises UnknownName."""
    key = name.strip().lstrip("#").lower()
    for channel in CHANNELS.values():
        if channel.name.lower() == key:
            return channel
    raise UnknownName(f"no channel named {name!r}; channels are: {', '.join(CHANNELS)}")


def role_by_name(name: str) -> int:
    """The id of the role called ``name`` (case-insensitive; a leading ``@`` is kept for @everyone)."""
    key = name.strip().lower()
    for role_id, (role_name, _, _) in ROLES.items():
        if key in (role_name.lower(), role_name.lower().lstrip("@")):
            return role_id
    raise UnknownName(f"no role named {name!r}; roles are: {', '.join(r[0] for r in ROLES.values())}")


def user_by_id(user_id: int) -> SimUser | None:
    """The bot or member (fixed or numbered) with this id, or None."""
    if user_id == BOT_USER_ID:
        return BOT
    if 1 <= user_id - NUMBERED_MEMBER_ID_BASE <= NUMBERED_MEMBER_MAX:
        return numbered_member(user_id - NUMBERED_MEMBER_ID_BASE)
    return next((m for m in MEMBERS.values() if m.id == user_id), None)


def channel_by_id(channel_id: int) -> SimChannel | None:
    """The channel with this id, or None."""
    return next((c for c in CHANNELS.values() if c.id == channel_id), None)


def permissions_of(user: SimUser) -> int:
    """Guild-level permission bits of ``user`` (channel overwrites not applied; see ``channel_permissions_of``)."""
    if user.id == OWNER_USER_ID:
        return ALL_PERMISSIONS
    bits = ROLES[EVERYONE_ROLE_ID][1]
    for role_id in user.role_ids:
        bits |= ROLES[role_id][1]
    return bits


def channel_permissions_of(user: SimUser, channel: SimChannel) -> int:
    """Permission bits of ``user`` in ``channel``: guild permissions, then the @everyone overwrite, then the
    member's roles' overwrites together, then a member overwrite (Discord's order). The owner has everything."""
    bits = permissions_of(user)
    if user.id == OWNER_USER_ID:
        return bits
    by_target = {o.target: o for o in channel.overwrites}
    everyone = by_target.get(EVERYONE_ROLE_ID)
    if everyone is not None:
        bits = (bits & ~everyone.deny) | everyone.allow
    roles = [by_target[r] for r in user.role_ids if r in by_target]
    allow = deny = 0
    for overwrite in roles:
        allow, deny = allow | overwrite.allow, deny | overwrite.deny
    bits = (bits & ~deny) | allow
    member = by_target.get(user.id)
    if member is not None and member.kind == 1:
        bits = (bits & ~member.deny) | member.allow
    return bits


def user_payload(user: SimUser) -> dict[str, Any]:
    """A Discord user object, with the fields Discord always sends (``UserResponse`` in its API description)."""
    data: dict[str, Any] = {
        "id": str(user.id),
        "username": user.name,
        "discriminator": "0",
        "global_name": None if user.bot else user.name.capitalize(),
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "collectibles": None,
        "primary_guild": None,
    }
    if user.bot:
        data["bot"] = True
    return data


def member_payload(user: SimUser, *, with_user: bool = True, with_permissions: bool = False) -> dict[str, Any]:
    """A guild member object; ``with_user=False`` gives the partial form embedded in MESSAGE_CREATE."""
    data: dict[str, Any] = {
        "roles": [str(r) for r in user.role_ids],
        "nick": None,
        "avatar": None,
        "banner": None,
        "joined_at": JOINED_AT,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user_payload(user)
    if with_permissions:
        data["permissions"] = str(permissions_of(user))
    return data


def role_payload(role_id: int) -> dict[str, Any]:
    """A Discord role object."""
    name, permissions, position = ROLES[role_id]
    return {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def channel_payload(channel: SimChannel) -> dict[str, Any]:
    """A guild channel object (text or voice)."""
    data: dict[str, Any] = {
        "id": str(channel.id),
        "type": channel.type,
        "guild_id": str(GUILD_ID),
        "name": channel.name,
        "position": channel.position,
        "permission_overwrites": [
            {"id": str(o.target), "type": o.kind, "allow": str(o.allow), "deny": str(o.deny)}
            for o in channel.overwrites
        ],
        "parent_id": None,
        "nsfw": False,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
    }
    if channel.type == 2:
        data.update(bitrate=64000, user_limit=0, rtc_region=None, video_quality_mode=1)
    elif channel.is_thread:  # the partial form of an interaction's channel; sandbox.threads has the full one
        data.update(parent_id=str(channel.parent_id), message_count=0, member_count=1, owner_id=str(BOT_USER_ID),
                    thread_metadata={"archived": False, "auto_archive_duration": 1440, "locked": False,
                                     "archive_timestamp": JOINED_AT})
    else:
        data.update(topic=f"The #{channel.name} channel of the sandbox", default_auto_archive_duration=1440)
    return data


def guild_payload() -> dict[str, Any]:
    """The guild object as GET /guilds/{id} returns it (no members or channels), with every field Discord always
    sends (``GuildResponse``)."""
    return {
        "id": str(GUILD_ID),
        "name": GUILD_NAME,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(OWNER_USER_ID),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "features": [],
        "roles": [role_payload(r) for r in ROLES],
        "emojis": [],
        "stickers": [],
        "application_id": None,
        "system_channel_id": str(GENERAL_CHANNEL_ID),
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "max_members": 500000,
        "max_presences": None,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "home_header": None,
        "region": "deprecated",  # voice regions are per channel now; Discord still sends the field
        "widget_enabled": False,
        "widget_channel_id": None,
        "nsfw": False,
        "incidents_data": None,
    }


def all_member_payloads() -> list[dict[str, Any]]:
    """The bot and the fixed members, with user objects (the numbered ones are found by id or name prefix)."""
    return [member_payload(BOT)] + [member_payload(m) for m in MEMBERS.values()]


def voice_state_payload(
    user: SimUser,
    channel: SimChannel | None,
    session_id: str,
    *,
    self_mute: bool = False,
    self_deaf: bool = False,
    in_guild_create: bool = False,
) -> dict[str, Any]:
    """A voice state object (``channel`` None: left voice). The VOICE_STATE_UPDATE form carries guild_id and the
    member; the form inside GUILD_CREATE's ``voice_states`` (``in_guild_create``) has neither, as on Discord."""
    data: dict[str, Any] = {
        "channel_id": str(channel.id) if channel is not None else None,
        "user_id": str(user.id),
        "session_id": session_id,
        "deaf": False,
        "mute": False,
        "self_deaf": self_deaf,
        "self_mute": self_mute,
        "self_video": False,
        "self_stream": False,
        "suppress": False,
        "request_to_speak_timestamp": None,
    }
    if not in_guild_create:
        data.update(guild_id=str(GUILD_ID), member=member_payload(user))
    return data


def guild_create_payload(intents: int, voice_states: list[dict[str, Any]] | None = None,
                         threads: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The GUILD_CREATE dispatch for a bot that IDENTIFYed with ``intents``.

    As on Discord, without the GUILD_PRESENCES intent ``members`` holds only the bot itself and the members in
    voice (the rest is fetched by chunking, which needs GUILD_MEMBERS); with it, the bot, the fixed members and
    the members in voice (the numbered ones are offline members of a large guild). ``member_count`` is always the
    full count, numbered members included, so ``large`` is true.
    ``voice_states`` (GUILD_CREATE form of ``voice_state_payload``) is sent only with GUILD_VOICE_STATES;
    ``threads``: the active (not archived) thread channel objects, as Discord lists them.
    """
    data = guild_payload()
    voice_states = list(voice_states or []) if intents & INTENT_GUILD_VOICE_STATES else []
    # Discord includes the members who are in a voice channel (numbered ones too), and with GUILD_PRESENCES the
    # online ones: here the fixed members.
    listed = [BOT, *MEMBERS.values()] if intents & INTENT_GUILD_PRESENCES else [BOT]
    listed_ids = {u.id for u in listed}
    in_voice = [user_by_id(int(v["user_id"])) for v in voice_states]
    listed += [u for u in in_voice if u is not None and u.id not in listed_ids]
    members = [member_payload(u) for u in listed]
    data.update(
        joined_at=JOINED_AT,
        large=MEMBER_COUNT > LARGE_THRESHOLD,
        unavailable=False,
        member_count=MEMBER_COUNT,
        members=members,
        channels=[channel_payload(c) for c in CHANNELS.values()],
        threads=list(threads or []),
        presences=[],
        voice_states=voice_states,
        stage_instances=[],
        guild_scheduled_events=[],
        soundboard_sounds=[],
    )
    return data


def granted_intents(*, message_content: bool) -> int:
    """The privileged intents the application is granted: presences and members always, Message Content when
    ``message_content``."""
    return INTENT_GUILD_PRESENCES | INTENT_GUILD_MEMBERS | (INTENT_MESSAGE_CONTENT if message_content else 0)


def application_flags(*, message_content: bool) -> int:
    """The application's ``flags``: the _LIMITED flag of each privileged intent it is granted
    (``granted_intents``)."""
    flags = APP_FLAG_GATEWAY_PRESENCE_LIMITED | APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED
    return flags | (APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED if message_content else 0)


def application_payload(*, message_content: bool = True) -> dict[str, Any]:
    """The application object of GET /applications/@me, with every field Discord always sends
    (``PrivateApplicationResponse``); ``message_content``: whether the Message Content intent is granted (its flag
    set)."""
    flags = application_flags(message_content=message_content)
    return {
        "id": str(APPLICATION_ID),
        "name": BOT_NAME,
        "icon": None,
        "description": "Local sandbox application",
        "rpc_origins": [],
        "bot_public": False,
        "bot_require_code_grant": False,
        "bot": user_payload(BOT),
        "owner": user_payload(MEMBERS["owner"]),
        "team": None,
        "verify_key": "0" * 64,
        "type": None,
        "flags": flags,
        "flags_new": str(flags),
        "tags": [],
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "approximate_guild_count": 1,
        "approximate_user_install_count": 0,
        "approximate_user_authorization_count": 0,
        "explicit_content_filter": 0,
        "eligible_oauth2_scopes": [],
        "integration_types_config": {"0": {}},
    }


def command_payload(body: dict[str, Any], *, command_id: int, application_id: int, version: int,
                    guild_id: int | None) -> dict[str, Any]:
    """An application command as Discord returns it (``ApplicationCommandResponse``) from the bot's create/overwrite
    ``body``: Discord's ``id``, ``application_id`` and ``version`` (a snowflake, new at each change),
    ``default_member_permissions`` as a string of the permission bits (the bot may send an integer) or null,
    ``integration_types`` defaulting to guild install ``[0]``, ``contexts`` null unless set, ``dm_permission`` only
    for a global command, and ``options`` only when there are some."""
    permissions = body.get("default_member_permissions")
    data: dict[str, Any] = {
        "id": str(command_id),
        "application_id": str(application_id),
        "version": str(version),
        "default_member_permissions": None if permissions is None else str(int(permissions)),
        "type": int(body.get("type", 1)),
        "name": body["name"],
        "name_localizations": body.get("name_localizations"),
        "description": body.get("description") or "",
        "description_localizations": body.get("description_localizations"),
        "contexts": body.get("contexts"),
        "integration_types": body.get("integration_types") or [0],
        "nsfw": bool(body.get("nsfw", False)),
    }
    if guild_id is None:
        data["dm_permission"] = bool(body.get("dm_permission", True))
    else:
        data["guild_id"] = str(guild_id)
    if body.get("options"):
        data["options"] = body["options"]
    return data
