"""The sandbox's voice server: what Discord's voice servers are to the bot, on 127.0.0.1.

``server`` (``SandboxVoice``: voice states, grants, the bot's op 4) ties together ``gateway`` (the wss:// voice
gateway v8), ``dave`` (each voice channel's DAVE end-to-end encryption group, as the gateway runs it, and the
simulated members' own DAVE clients; ``mls`` reads and writes its MLS messages), ``udp`` (IP discovery, sealed RTP),
``audio`` (what the bot sends, decoded and measured per talk spurt, recorded on request), ``speech`` (what a simulated
member says, planned as talk spurts of Opus frames) and ``speaker`` (members' RTP streams, paced in a thread).
"""
