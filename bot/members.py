"""Members by name: display names for transcripts and speech, and mentions turned into names.

The bot runs without the privileged members intent, so a member is often not cached: ``member_name`` asks Discord
(``fetch_member``) before giving up with "someone".
"""

from __future__ import annotations

import re

import discord

from services.speech.speech_text import USER_MENTION

UNKNOWN_MEMBER = "someone"


async def member_name(guild: discord.Guild | None, user_id: int) -> str:
    """The display name of ``user_id`` in ``guild``: cached, else fetched; "someone" when it cannot be had."""
    if guild is None:
        return UNKNOWN_MEMBER
    member = guild.get_member(user_id)
    if member is None:
        try:
            member = await guild.fetch_member(user_id)
        except discord.HTTPException:
            return UNKNOWN_MEMBER
    return member.display_name


def resolve_mentions(guild: discord.Guild | None, text: str) -> str:
    """``text`` with each ``<@id>`` replaced by the cached member's display name, or "someone"."""

    def name(match: re.Match[str]) -> str:
        member = guild.get_member(int(match.group(1))) if guild else None
        return member.display_name if member else UNKNOWN_MEMBER

    return USER_MENTION.sub(name, text)


def without_mention_of(user_id: int, text: str) -> str:
    """``text`` with every mention of ``user_id`` (the bot, in a message addressing it) removed, stripped."""
    return USER_MENTION.sub(lambda m: "" if int(m.group(1)) == user_id else m.group(0), text).strip()
