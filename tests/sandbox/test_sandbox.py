"""The sandbox (local Discord) driven by a real, tiny discord.py bot defined here (not our cogs)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import discord
import discord.http
import pytest
from discord import app_commands
from discord.ext import commands

from sandbox import (
    ADMIN_ROLE_ID,
    ADMIN_USER_ID,
    ALICE_USER_ID,
    BOT_USER_ID,
    GENERAL_CHANNEL_ID,
    GUILD_ID,
    Sandbox,
    SandboxError,
    run_playground,
)
from sandbox.messages import with_component_ids
from sandbox.wire import WireLog


class TinyBot(commands.Bot):
    """A bare bot with a few app commands that exercise the interaction paths."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        super().__init__(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
        self.slow_delay = 0.0
        self.thinking: discord.InteractionMessage | None = None

    async def setup_hook(self) -> None:
        g = discord.Object(GUILD_ID)

        @app_commands.command(name="ping", description="Answer pong")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        @app_commands.command(name="steps", description="Defer, follow up, edit, follow up")
        async def steps(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.followup.send("step one")
            await interaction.edit_original_response(content="step two")
            await interaction.followup.send("step three")

        @app_commands.command(name="think", description="Defer, read the thinking message, then answer")
        async def think(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            self.thinking = await interaction.original_response()
            await interaction.followup.send("thought")

        @app_commands.command(name="secret", description="Ephemeral answer")
        async def secret(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("only for you", ephemeral=True)

        @app_commands.command(name="long", description="Too long an answer")
        async def long(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("x" * 2001)

        @app_commands.command(name="slow", description="Answers after slow_delay seconds")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(self.slow_delay)
            await interaction.response.send_message("finally")

        @app_commands.command(name="embed", description="Embed with an overlong title")
        async def embed(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(embed=discord.Embed(title="t" * 257))

        @app_commands.command(name="menu", description="A message with buttons")
        async def menu(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pick one", view=Menu())

        @app_commands.command(name="empty", description="Sends an empty message to the channel")
        async def empty(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            try:
                await interaction.channel.send(content="")
            except discord.HTTPException as exc:
                await interaction.followup.send(f"refused: {exc.code}")

        docs = app_commands.Group(name="docs", description="Documents")

        @docs.command(name="add", description="Add a document")
        async def add(interaction: discord.Interaction, file: discord.Attachment) -> None:
            data = await file.read()
            digest = hashlib.sha256(data).hexdigest()[:12]
            reply = discord.File(io.BytesIO(data), filename=f"copy-{file.filename}")
            await interaction.response.send_message(f"{file.filename} {len(data)} {digest}", file=reply)

        @docs.command(name="reload", description="Reload the index")
        async def reload(interaction: discord.Interaction, full: bool = False) -> None:
            admin = interaction.permissions.manage_guild
            await interaction.response.send_message(f"reload full={full} admin={admin}", ephemeral=not admin)

        for cmd in (ping, steps, think, secret, long, slow, embed, menu, empty, docs):
            self.tree.add_command(cmd, guild=g)
        await self.tree.sync(guild=g)

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        if self.user in message.mentions:
            await message.add_reaction("\N{EYES}")
            await message.reply(f"hi {message.author.name}, you said: {message.clean_content}")


class Menu(discord.ui.View):
    @discord.ui.button(label="Stop", custom_id="menu:stop")
    async def stop_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="stopped", view=None)

    @discord.ui.button(label="Later", custom_id="menu:later")
    async def later_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        await interaction.followup.send("later it is", ephemeral=True)


@pytest.fixture
async def bot(sandbox: Sandbox) -> AsyncIterator[TinyBot]:
    client = TinyBot()
    task = asyncio.create_task(client.start(sandbox.bot_token))
    try:
        await sandbox.wait_ready(timeout=10)
        await asyncio.wait_for(client.wait_until_ready(), 10)
        yield client
    finally:
        await client.close()
        await task


def bot_said(content: str | None = None, kind: str = "message"):
    def match(ev: dict) -> bool:
        return ev["event"] == kind and ev.get("author") == "Assistant" and (content is None or ev["content"] == content)

    return match


async def test_ready_populates_guild_members_roles_channels(sandbox: Sandbox, bot: TinyBot) -> None:
    g = bot.get_guild(GUILD_ID)
    assert g is not None and g.name == "Sandbox"
    assert {r.name for r in g.roles} == {"@everyone", "Admin"}
    assert {c.name for c in g.channels} == {"general", "random", "Lounge", "Quiet", "Private", "Games"}
    assert isinstance(g.get_channel(GENERAL_CHANNEL_ID), discord.TextChannel)
    assert (
        g.get_channel_or_thread(next(c.id for c in g.channels if c.name == "Lounge")).type is discord.ChannelType.voice
    )
    assert {m.name for m in g.members} >= {"Assistant", "admin", "alice", "bob"}
    admin = g.get_member(ADMIN_USER_ID)
    assert admin is not None and g.get_role(ADMIN_ROLE_ID) in admin.roles
    assert admin.guild_permissions.manage_guild and not g.get_member(ALICE_USER_ID).guild_permissions.manage_guild
    assert bot.user.id == BOT_USER_ID == sandbox.bot_user_id
    assert bot.application_id == sandbox.application_id
    assert sandbox.events()[0] == {"event": "ready", "guild_id": GUILD_ID, "t_ms": sandbox.events()[0]["t_ms"]}


async def test_command_sync_is_stored(sandbox: Sandbox, bot: TinyBot) -> None:
    assert sandbox.sync_count == 1
    names = {c["name"] for c in sandbox.commands}
    assert {"ping", "steps", "docs"} <= names
    docs = next(c for c in sandbox.commands if c["name"] == "docs")
    assert docs["guild_id"] == str(GUILD_ID)
    assert {o["name"] for o in docs["options"]} == {"add", "reload"}
    fetched = await bot.tree.fetch_commands(guild=discord.Object(GUILD_ID))
    assert {c.name for c in fetched} == names


async def test_defer_followup_edit_events(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("alice", "steps")
    third = await sandbox.wait_for(bot_said("step three"), since=handle)
    evs = [e for e in sandbox.events(handle) if e.get("interaction_id") == handle.interaction_id]
    kinds = [(e["event"], e.get("content")) for e in evs]
    assert kinds == [
        ("command", None),
        ("deferred", None),
        ("message", "step one"),  # the first followup fills the "thinking" original response
        ("edit", "step two"),
        ("message", "step three"),
    ]
    assert evs[2]["message_id"] == evs[3]["message_id"] != third["message_id"]
    visible = [(m["content"], m["edited"]) for m in sandbox.channel_messages("general")]
    assert visible == [("step two", True), ("step three", False)]
    assert not sandbox.errors


async def test_a_deferred_response_is_a_loading_message_from_the_defer_on(sandbox: Sandbox, bot: TinyBot) -> None:
    sandbox.wire = WireLog()
    handle = await sandbox.invoke("alice", "think")
    await sandbox.wait_for(bot_said("thought"), since=handle)
    thinking = bot.thinking
    assert thinking is not None and thinking.flags.loading and thinking.content == ""  # GET @original at once
    dispatched = [(p["t"], p["d"]["flags"] & 128, p["d"]["content"]) for p in sandbox.wire.dispatches
                  if p["t"].startswith("MESSAGE_") and p["d"]["id"] == str(thinking.id)]
    assert dispatched == [("MESSAGE_CREATE", 128, ""), ("MESSAGE_UPDATE", 0, "thought")]
    callback = next(x for x in sandbox.wire.rest if x.path.endswith("/callback"))
    interaction = callback.response["interaction"]
    assert (interaction["type"], interaction["response_message_id"], interaction["response_message_loading"]) == (
        2, str(thinking.id), True)
    assert "resource" not in callback.response  # Discord describes a resource for types 4 and 7 only
    assert not sandbox.errors


async def test_commands_come_back_as_discord_returns_them(sandbox: Sandbox, bot: TinyBot) -> None:
    body = [{"name": "admin", "description": "Admins only", "type": 1, "default_member_permissions": 8192}]
    first = await bot.http.bulk_upsert_guild_commands(BOT_USER_ID, GUILD_ID, body)
    second = await bot.http.bulk_upsert_guild_commands(BOT_USER_ID, GUILD_ID, body)
    assert first[0]["default_member_permissions"] == "8192"  # the bot sent an integer
    assert first[0]["id"] == second[0]["id"] and first[0]["version"] != second[0]["version"]
    assert (first[0]["application_id"], first[0]["guild_id"]) == (str(BOT_USER_ID), str(GUILD_ID))
    assert first[0]["integration_types"] == [0] and "options" not in first[0] and "dm_permission" not in first[0]
    assert await bot.http.get_guild_commands(BOT_USER_ID, GUILD_ID) == second


async def test_components_get_ids_as_discord_assigns_them(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("alice", "menu")
    menu = await sandbox.wait_for(bot_said("pick one"), since=handle)
    row = sandbox.messages[menu["message_id"]].payload["components"][0]
    assert [row["id"]] + [button["id"] for button in row["components"]] == [1, 2, 3]
    chosen = [{"type": 1, "components": [{"type": 2, "id": 2}, {"type": 2}]}]
    numbered = with_component_ids(chosen)
    assert [numbered[0]["id"]] + [b["id"] for b in numbered[0]["components"]] == [1, 2, 3]  # the bot's own id kept
    assert "id" not in chosen[0]  # the bot's body is not changed


async def test_ephemeral_answer(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("bob", "secret", channel="random")
    ev = await sandbox.wait_for(bot_said("only for you"), since=handle)
    assert ev["ephemeral"] is True and ev["channel"] == "random"
    assert sandbox.channel_messages("random")[0]["ephemeral"] is True


async def test_too_long_content_is_an_error_event(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("alice", "long")
    err = await sandbox.wait_for(lambda e: e["event"] == "error", since=handle)
    assert err["code"] == 50035 and "2000" in err["message"]
    assert err["route"].startswith("POST /interactions/")
    assert sandbox.errors == [err]
    assert sandbox.channel_messages("general") == []


async def test_embed_limit_is_an_error_event(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("alice", "embed")
    err = await sandbox.wait_for(lambda e: e["event"] == "error", since=handle)
    assert err["code"] == 50035 and "embeds.0.title" in err["message"]


async def test_answering_twice_is_an_error_event(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("alice", "ping")
    await sandbox.wait_for(bot_said("pong"), since=handle)
    url = f"{sandbox.api_base}/interactions/{handle.interaction_id}/{handle.token}/callback"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"type": 4, "data": {"content": "again"}}) as resp:
            assert resp.status == 400
            assert (await resp.json())["code"] == 40060
    assert sandbox.errors[-1]["code"] == 40060
    assert sandbox.errors[-1]["message"] == "Interaction has already been acknowledged."


async def test_answer_after_deadline_is_an_error_event(sandbox: Sandbox, bot: TinyBot) -> None:
    sandbox.interaction_deadline_s = 0.1
    bot.slow_delay = 0.3
    handle = await sandbox.invoke("alice", "slow")
    err = await sandbox.wait_for(lambda e: e["event"] == "error", since=handle)
    assert err["code"] == 10062 and err["message"] == "Unknown interaction"
    assert not [e for e in sandbox.events(handle) if e["event"] == "message"]


async def test_mention_gets_a_reply_with_reference(sandbox: Sandbox, bot: TinyBot) -> None:
    position = sandbox.event_position
    msg = await sandbox.send_message("bob", "general", "hello there", mention_bot=True)
    reply = await sandbox.wait_for(bot_said(), since=position)
    assert reply["reference_id"] == msg["id"]
    reaction = next(e for e in sandbox.events(position) if e["event"] == "reaction")
    assert reaction["message_id"] == msg["id"] and reaction["emoji"] == "\N{EYES}" and reaction["added"]
    assert reply["content"] == "hi bob, you said: @Assistant hello there"
    assert [m["author"] for m in sandbox.channel_messages("general")] == ["bob", "Assistant"]
    # a member replying to the bot counts as a mention (the reply pings the bot)
    position = sandbox.event_position
    await sandbox.send_message("alice", "general", "thanks", reply_to=reply["message_id"])
    again = await sandbox.wait_for(bot_said(), since=position)
    assert again["content"] == "hi alice, you said: thanks"


async def test_plain_message_without_mention_is_ignored(sandbox: Sandbox, bot: TinyBot) -> None:
    position = sandbox.event_position
    await sandbox.send_message("bob", "general", "just chatting")
    with pytest.raises(TimeoutError):
        await sandbox.wait_for(bot_said(), timeout=0.3, since=position)


async def test_attachment_option_round_trip(sandbox: Sandbox, bot: TinyBot, tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_bytes(b"# Notes\n\nSome text.\n" * 50)
    digest = hashlib.sha256(doc.read_bytes()).hexdigest()[:12]
    handle = await sandbox.invoke("admin", "docs add", {"file": doc})
    ev = await sandbox.wait_for(bot_said(), since=handle)
    assert ev["content"] == f"notes.md {doc.stat().st_size} {digest}"
    assert ev["attachments"] == [{"filename": "copy-notes.md", "size": doc.stat().st_size}]
    url = sandbox.channel_messages("general")[-1]["attachments"][0]["url"]
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert await resp.read() == doc.read_bytes()


async def test_subcommand_options_and_permissions_in_payload(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("admin", "/docs reload", {"full": "true"})
    ev = await sandbox.wait_for(bot_said(), since=handle)
    assert ev["content"] == "reload full=True admin=True" and not ev["ephemeral"]
    handle = await sandbox.invoke("alice", "docs reload")
    ev = await sandbox.wait_for(bot_said(), since=handle)
    assert ev["content"] == "reload full=False admin=False" and ev["ephemeral"]


async def test_invoke_rejects_bad_input(sandbox: Sandbox, bot: TinyBot) -> None:
    with pytest.raises(SandboxError, match="unknown command /nope"):
        await sandbox.invoke("alice", "nope")
    with pytest.raises(SandboxError, match="needs a subcommand"):
        await sandbox.invoke("alice", "docs")
    with pytest.raises(SandboxError, match="needs option 'file'"):
        await sandbox.invoke("admin", "docs add")
    with pytest.raises(SandboxError, match="no option 'color'"):
        await sandbox.invoke("admin", "docs reload", {"color": "red"})
    with pytest.raises(SandboxError, match="no member named 'carol'"):
        await sandbox.invoke("carol", "ping")


async def test_empty_message_is_rejected(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("alice", "empty")
    ev = await sandbox.wait_for(bot_said(), since=handle)
    assert ev["content"] == "refused: 50006"
    assert [e["code"] for e in sandbox.errors] == [50006]


async def test_buttons_update_and_deferred_update(sandbox: Sandbox, bot: TinyBot) -> None:
    handle = await sandbox.invoke("alice", "menu")
    menu = await sandbox.wait_for(bot_said("pick one"), since=handle)
    click = await sandbox.click("bob", menu["message_id"], "menu:later")
    later = await sandbox.wait_for(bot_said("later it is"), since=click)
    assert later["ephemeral"] and later["interaction_id"] == click.interaction_id
    click = await sandbox.click("bob", menu["message_id"], "menu:stop")
    edit = await sandbox.wait_for(bot_said("stopped", kind="edit"), since=click)
    assert edit["message_id"] == menu["message_id"]
    assert sandbox.messages[menu["message_id"]].payload["components"] == []
    with pytest.raises(SandboxError, match="no component"):
        await sandbox.click("bob", menu["message_id"], "menu:nope")
    assert not sandbox.errors


async def test_reconnect_and_resume(sandbox: Sandbox, bot: TinyBot) -> None:
    session = sandbox.gateway.session
    await sandbox.send_reconnect()
    assert sandbox.gateway.session is session and sandbox.gateway.connected
    assert any(e["event"] == "resumed" for e in sandbox.events())
    handle = await sandbox.invoke("alice", "ping")
    await sandbox.wait_for(bot_said("pong"), since=handle)


async def test_events_sent_while_disconnected_are_replayed(sandbox: Sandbox, bot: TinyBot) -> None:
    await sandbox.send_reconnect(wait=False)
    handle = await sandbox.invoke("alice", "ping")  # likely dispatched before the bot has resumed
    await sandbox.wait_for(bot_said("pong"), since=handle)
    assert not sandbox.errors


async def test_unknown_route_is_a_visible_404(sandbox: Sandbox, bot: TinyBot) -> None:
    with pytest.raises(discord.NotFound) as info:
        await bot.http.request(discord.http.Route("GET", "/guilds/{guild_id}/bans", guild_id=GUILD_ID))
    assert info.value.code == 0 and info.value.text == "404: Not Found"
    assert sandbox.errors[-1]["route"] == f"GET /guilds/{GUILD_ID}/bans"


async def test_bad_token_is_rejected(sandbox: Sandbox) -> None:
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    async with aiohttp.ClientSession() as http, http.ws_connect(sandbox.gateway_url + "?v=10&encoding=json") as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 0, "properties": {}}})
        await ws.receive()
        assert ws.close_code == 4004


async def test_raw_gateway_uncompressed_and_zlib(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(sandbox.gateway_url + "?v=10&encoding=json") as ws:
            assert (await ws.receive_json())["op"] == 10
            await ws.send_json({"op": 1, "d": None})
            assert (await ws.receive_json())["op"] == 11
        async with http.ws_connect(sandbox.gateway_url + "?v=10&encoding=json&compress=zlib-stream") as ws:
            inflater = zlib.decompressobj()
            frame = await ws.receive_bytes()
            assert frame.endswith(b"\x00\x00\xff\xff")
            assert json.loads(inflater.decompress(frame))["op"] == 10
            await ws.send_json({"op": 2, "d": {"token": sandbox.bot_token, "intents": 1 << 9}})
            ready = json.loads(inflater.decompress(await ws.receive_bytes()))
            created = json.loads(inflater.decompress(await ws.receive_bytes()))
    assert (ready["t"], ready["s"], created["t"], created["s"]) == ("READY", 1, "GUILD_CREATE", 2)
    assert [m["user"]["username"] for m in created["d"]["members"]] == ["Assistant"]  # no presences intent


async def test_playground_script_json(sandbox: Sandbox, bot: TinyBot, tmp_path: Path) -> None:
    doc = tmp_path / "faq.md"
    doc.write_text("hello")
    script = [
        "# a comment",
        "/ping",
        "as admin",
        "/docs reload full: true",
        f"/docs add file: {doc}",
        "in random",
        "@bot hi there",
        "reply and again",
        "/menu",
        "click Stop",
        "say nobody answers this",
        "/docs reload colour: red",
    ]
    out = io.StringIO()
    rc = await run_playground(sandbox, lines=script, json_mode=True, out=out, settle_s=0.15, max_wait_s=5)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    said = [e["content"] for e in events if e["event"] == "message" and e["author"] == "Assistant"]
    assert said == [
        "pong",
        "reload full=True admin=True",
        "faq.md 5 " + hashlib.sha256(b"hello").hexdigest()[:12],
        "hi admin, you said: @Assistant hi there",
        "hi admin, you said: and again",
        "pick one",
    ]
    assert [e["content"] for e in events if e["event"] == "edit"] == ["stopped"]
    commands_run = [(e["user"], e["command"], e["options"]) for e in events if e["event"] == "command"]
    assert commands_run[1] == ("admin", "docs reload", {"full": "true"})
    usage = [e for e in events if e["event"] == "usage_error"]
    assert len(usage) == 1 and "no option 'colour'" in usage[0]["message"]
    assert rc == 1  # the bad line makes the script fail


async def test_playground_human_output(sandbox: Sandbox, bot: TinyBot) -> None:
    out = io.StringIO()
    rc = await run_playground(
        sandbox, lines=["/steps", "/secret", "/long"], json_mode=False, out=out, settle_s=0.15, max_wait_s=5
    )
    text = out.getvalue()
    assert "[#general] Assistant: step one" in text
    assert "[#general] Assistant (edit): step two" in text
    assert "[#general] Assistant (only you): only for you" in text
    assert "!! error 50035" in text
    assert rc == 1


async def test_message_content_needs_the_intent(sandbox: Sandbox) -> None:
    """Without MESSAGE_CONTENT, other members' messages arrive blank unless they mention the bot."""
    async with aiohttp.ClientSession() as http, http.ws_connect(sandbox.gateway_url + "?v=10&encoding=json") as ws:
        assert (await ws.receive_json())["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": sandbox.bot_token, "intents": 1 << 9}})
        await sandbox.wait_ready()
        await sandbox.send_message("bob", "general", "secret words")
        await sandbox.send_message("bob", "general", "hey you", mention_bot=True)
        seen = []
        while len(seen) < 2:
            msg = await ws.receive_json()
            if msg.get("t") == "MESSAGE_CREATE":
                seen.append(msg["d"]["content"])
    assert seen == ["", f"<@{BOT_USER_ID}> hey you"]
