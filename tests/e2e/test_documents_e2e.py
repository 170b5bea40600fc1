"""Documents through the sandbox: admin-only reload, incremental reindex, skipped files, grounded answers."""

from __future__ import annotations

import re

from sandbox import GUILD_ID
from tests.e2e.conftest import ADMINS_ONLY, ephemeral_replies


def counts(text: str, scope: str = "Global documents") -> dict[str, int]:
    line = next(line for line in text.splitlines() if line.startswith(f"**{scope}**"))
    return {name: int(number) for number, name in re.findall(r"(\d+) (added|updated|removed|unchanged|skipped)", line)}


async def test_member_reload_is_refused_and_admin_reload_works(make_harness):
    harness = await make_harness(docs=True)
    _, events = await harness.answer("alice", "docs reload")
    assert ephemeral_replies(events) == [ADMINS_ONLY]
    assert harness.ollama.embed_calls == 0
    interaction_id, _ = await harness.answer("admin", "docs reload")
    report = harness.bot_messages(interaction_id)[-1]["content"]
    assert counts(report) == {"added": 4, "updated": 0, "removed": 0, "unchanged": 0, "skipped": 0}


async def test_second_reload_without_change_makes_no_embedding_call(make_harness):
    harness = await make_harness(docs=True)
    await harness.answer("admin", "docs reload")
    harness.ollama.reset_counters()
    interaction_id, _ = await harness.answer("admin", "docs reload")
    assert harness.ollama.embed_calls == 0
    assert counts(harness.bot_messages(interaction_id)[-1]["content"])["unchanged"] == 4
    # One changed file: only it is embedded again.
    gpu = harness.settings.DOCUMENTS_DIR / "global" / "gpu.md"
    gpu.write_text(gpu.read_text() + "\n## Apple silicon\n\nMetal is used on Apple computers.\n")
    interaction_id, _ = await harness.answer("admin", "docs reload")
    assert counts(harness.bot_messages(interaction_id)[-1]["content"]) == {
        "added": 0, "updated": 1, "removed": 0, "unchanged": 3, "skipped": 0
    }
    assert harness.ollama.embedded_texts >= 1 and harness.ollama.embed_calls >= 1


async def test_unreadable_files_are_skipped_and_named(make_harness):
    harness = await make_harness(docs=True)
    folder = harness.settings.DOCUMENTS_DIR / "global"
    (folder / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (folder / "empty.md").write_text("")
    interaction_id, _ = await harness.answer("admin", "docs reload")
    report = harness.bot_messages(interaction_id)[-1]["content"]
    assert counts(report)["skipped"] == 3 and counts(report)["added"] == 4
    assert re.search(r"skipped `image\.md`: binary", report)
    assert re.search(r"skipped `latin1\.txt`: not decodable", report)
    assert re.search(r"skipped `empty\.md`: empty", report)


async def test_ask_cites_the_right_document(make_harness):
    harness = await make_harness(docs=True)
    await harness.answer("admin", "docs reload")
    questions = {
        "How do I choose which GPU cards the server uses?": "gpu.md",
        "Downloads go through my proxy, which variable do I set?": "proxy.md",
        "How can I change the folder where models are stored?": "storage.md",
        "How long does a model stay loaded in memory?": "faq.txt",
    }
    for question, source in questions.items():
        interaction_id, _ = await harness.answer("bob", "ask", {"question": question})
        answer = "\n".join(message["content"] for message in harness.bot_messages(interaction_id))
        cited = re.findall(r"\[(\d)\] `([^`]+)`", answer)
        assert cited and cited[0][1] == source, (question, answer[-300:])
        # the excerpts reached the model
        assert source in harness.ollama.chat_requests[-1]["messages"][-1]["content"]


async def test_exact_setting_name_is_found_by_search(make_harness):
    harness = await make_harness(docs=True)
    await harness.answer("admin", "docs reload")
    interaction_id, _ = await harness.answer("bob", "docs search", {"query": "CUDA_VISIBLE_DEVICES"})
    [message] = harness.bot_messages(interaction_id)
    first_field = message["embeds"][0]["fields"][0]
    assert "gpu.md" in first_field["name"] and "CUDA_VISIBLE_DEVICES" in first_field["value"]


async def test_add_list_and_remove_a_document(make_harness, tmp_path):
    harness = await make_harness()
    upload = tmp_path / "Release Notes.md"
    upload.write_text("# Release notes\n\nVersion 2 adds the frobnicator setting FROB_LEVEL.\n")
    _, events = await harness.answer("bob", "docs add", {"file": upload})
    assert ephemeral_replies(events) == [ADMINS_ONLY]
    interaction_id, _ = await harness.answer("admin", "docs add", {"file": upload})
    added = harness.bot_messages(interaction_id)[-1]["content"]
    name = re.search(r"Added `([^`]+)`", added).group(1)
    assert (harness.settings.DOCUMENTS_DIR / str(GUILD_ID) / name).is_file()
    interaction_id, events = await harness.answer("bob", "docs list")
    listing = ephemeral_replies(events)[-1] if ephemeral_replies(events) else ""
    embeds = [event["embeds"] for event in events if event.get("embeds")]
    assert name in (listing + str(embeds))
    interaction_id, _ = await harness.answer("bob", "docs search", {"query": "FROB_LEVEL"})
    assert name in str(harness.bot_messages(interaction_id)[-1]["embeds"])
    await harness.answer("admin", "docs remove", {"name": name})
    interaction_id, _ = await harness.answer("bob", "docs search", {"query": "FROB_LEVEL frobnicator"})
    assert name not in str(harness.bot_messages(interaction_id)[-1])


async def test_add_refuses_unsupported_type_and_path_tricks(make_harness, tmp_path):
    harness = await make_harness()
    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ\x00\x00")
    _, events = await harness.answer("admin", "docs add", {"file": bad})
    [reply] = ephemeral_replies(events)
    assert "not a supported document" in reply
    guild_dir = harness.settings.DOCUMENTS_DIR / str(GUILD_ID)
    assert not guild_dir.exists() or not any(guild_dir.iterdir())


async def test_link_to_a_file_outside_the_folder_is_skipped_and_never_shown(make_harness, tmp_path):
    harness = await make_harness(docs=True)
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:SECRET_PASSWORD_LINE:/root:/bin/bash\n")
    folder = harness.settings.DOCUMENTS_DIR / "global"
    (folder / "passwd.txt").symlink_to(secret)  # what `ln -s /etc/passwd global/passwd.txt` does
    (folder / "gpu-alias.md").symlink_to("gpu.md")  # a link that stays inside is still a document
    interaction_id, _ = await harness.answer("admin", "docs reload")
    report = harness.bot_messages(interaction_id)[-1]["content"]
    assert counts(report) == {"added": 5, "updated": 0, "removed": 0, "unchanged": 0, "skipped": 1}
    assert "skipped `passwd.txt`: link to a file outside the documents folder" in report
    interaction_id, _ = await harness.answer("bob", "docs search", {"query": "SECRET_PASSWORD_LINE root passwd"})
    message = harness.bot_messages(interaction_id)[-1]
    passages = str([embed["fields"] for embed in message["embeds"]])  # the embed's title repeats the query
    assert "SECRET_PASSWORD_LINE" not in passages and "passwd.txt" not in passages


async def test_add_with_a_path_in_the_upload_name_stores_it_under_a_safe_name(make_harness, tmp_path):
    # A modified client can name an upload anything; the sanitizer, not the file system, decides where it goes.
    harness = await make_harness()
    guild_dir = harness.settings.DOCUMENTS_DIR / str(GUILD_ID)
    for upload_name, saved in (("../../etc/evil.md", "evil.md"), ("notes/a/b.md", "b.md")):
        data = f"# {saved}\n\nThe zorblax setting of {saved}.\n".encode()
        interaction_id, events = await harness.answer("admin", "docs add", {"file": (upload_name, data)})
        assert not ephemeral_replies(events), events
        assert harness.bot_messages(interaction_id)[-1]["content"].startswith(f"Added `{saved}`.")
        assert (guild_dir / saved).read_bytes() == data
    assert sorted(p.name for p in guild_dir.iterdir()) == ["b.md", "evil.md"]
    assert not (harness.settings.DOCUMENTS_DIR / "etc").exists() and not (tmp_path / "etc").exists()
    assert not harness.sandbox.errors


async def test_blank_docs_question_and_query_are_refused_and_never_reach_the_model(make_harness):
    harness = await make_harness(docs=True)
    for name, option, what in (("docs ask", "question", "Your question"), ("docs search", "query", "Your query")):
        _, events = await harness.answer("bob", name, {option: " \n  "})
        assert ephemeral_replies(events) == [f"{what} is blank; write some text and try again."]
    assert harness.ollama.chat_requests == [] and harness.ollama.embed_calls == 0


async def test_add_whose_upload_cannot_be_downloaded_says_to_upload_it_again(make_harness, tmp_path):
    harness = await make_harness()
    upload = tmp_path / "notes.md"
    upload.write_text("# Notes\n\nThe meeting is on Tuesday.\n")
    handle = await harness.sandbox.invoke("admin", "docs add", {"file": upload})
    # Before the bot can fetch it (no await in between), the attachment CDN forgets the file: it answers 404,
    # as Discord's does for an expired attachment URL.
    harness.sandbox.attachments.clear()
    await harness.settle(interaction_id=handle.interaction_id)
    [reply] = harness.bot_messages(handle.interaction_id)
    assert reply["content"] == "⚠️ The upload `notes.md` could not be read from Discord; upload it again."
    guild_dir = harness.settings.DOCUMENTS_DIR / str(GUILD_ID)
    assert not guild_dir.exists() or not any(guild_dir.iterdir())


async def test_reload_interrupted_by_shutdown_says_how_far_it_got_and_the_next_reload_continues(make_harness):
    harness = await make_harness(EMBED_BATCH_SIZE=1)  # one embedding call per file: files are committed one by one
    folder = harness.settings.DOCUMENTS_DIR / "global"
    folder.mkdir(parents=True)
    for number in range(60):
        (folder / f"topic{number:02}.md").write_text(f"# Topic {number}\n\nTopic {number} has the code word w{number}.")
    harness.ollama.first_token_latency_s = 0.3  # each embedding call takes 0.3 s: the reload takes about 18 s
    handle = await harness.sandbox.invoke("admin", "docs reload")
    await harness.sandbox.wait_for(
        lambda e: e.get("interaction_id") == handle.interaction_id
        and re.search(r"Indexing… ([3-9]|\d\d)/60 files", e.get("content") or "") is not None,
        since=handle, timeout=60)
    await harness.bot.close()
    [note] = harness.bot_messages(handle.interaction_id)
    assert note["content"].startswith("⚠️ Reload interrupted: the bot is shutting down."), note
    reached = int(re.search(r"stopped at file (\d+) of 60 of the global documents", note["content"]).group(1))
    assert "the next `/docs reload` continues from there" in note["content"]
    # Restart: the files indexed before the shutdown are kept; only the rest is embedded.
    harness.ollama.first_token_latency_s = 0
    harness.ollama.reset_counters()
    (harness.settings.DATA_DIR / "command_sync.json").unlink()  # the new sandbox is a fresh Discord: sync again
    restarted = await make_harness()
    interaction_id, _ = await restarted.answer("admin", "docs reload", timeout=60)
    report = counts(restarted.bot_messages(interaction_id)[-1]["content"])
    assert report["unchanged"] >= reached - 1 and report["added"] == 60 - report["unchanged"], (reached, report)
    assert restarted.ollama.embedded_texts == report["added"]
