"""The sandbox's voice server: what Discord's voice servers are to the bot, on 127.0.0.1.

``server`` (``SandboxVoice``: voice states, grants, the bot's op 4) ties together ``gateway`` (the wss:// voice
gateway v8), ``udp`` (IP discovery, sealed RTP), ``audio`` (what the bot sends, decoded and measured per talk
spurt), ``speech`` (what a simulated member says, planned as talk spurts of Opus frames) and ``speaker`` (members'
RTP streams, paced in a thread).
"""
