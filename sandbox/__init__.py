"""The local Discord ("sandbox"): gateway, REST, voice (wss:// + UDP) and a fixed simulated guild on loopback,
plus the playground.

``Sandbox`` is the entry point (see ``sandbox.server``); the guild's fixed ids and names come from
``sandbox.guild``; ``Playground`` (and ``run_playground``) is the member-side terminal client. Not part of the
product: see docs/sandbox.md for what it is, how tests, benchmarks and the playground use it, and its events.
"""

from .guild import (
    ADMIN_ROLE_ID,
    ADMIN_USER_ID,
    ALICE_USER_ID,
    APPLICATION_ID,
    BOB_USER_ID,
    BOT_NAME,
    BOT_USER_ID,
    CHANNELS,
    EVERYONE_ROLE_ID,
    GAMES_CHANNEL_ID,
    GENERAL_CHANNEL_ID,
    GUILD_ID,
    GUILD_NAME,
    LOUNGE_CHANNEL_ID,
    MEMBERS,
    OWNER_USER_ID,
    PRIVATE_CHANNEL_ID,
    QUIET_CHANNEL_ID,
    RANDOM_CHANNEL_ID,
)
from .model import InvokeHandle, SandboxError, Upload
from .playground import Playground, run_playground
from .server import Sandbox

__all__ = [
    "ADMIN_ROLE_ID",
    "ADMIN_USER_ID",
    "ALICE_USER_ID",
    "APPLICATION_ID",
    "BOB_USER_ID",
    "BOT_NAME",
    "BOT_USER_ID",
    "CHANNELS",
    "EVERYONE_ROLE_ID",
    "GENERAL_CHANNEL_ID",
    "GUILD_ID",
    "GUILD_NAME",
    "LOUNGE_CHANNEL_ID",
    "MEMBERS",
    "OWNER_USER_ID",
    "PRIVATE_CHANNEL_ID",
    "GAMES_CHANNEL_ID",
    "QUIET_CHANNEL_ID",
    "RANDOM_CHANNEL_ID",
    "InvokeHandle",
    "Playground",
    "Sandbox",
    "SandboxError",
    "Upload",
    "run_playground",
]
