"""The spoken conversation: endpointing (where an utterance ends), the end-of-turn decision, and the spoken turns
that transcribe, answer and speak. Imports ``speech`` and ``chat`` (and, through chat, ``storage``).
"""
