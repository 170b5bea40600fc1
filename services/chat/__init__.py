"""Answering: the model client and its fair queue, a reasoning model's thinking kept out of the answer, the chat
settings per guild and channel, conversation history and context, attachments, the grounded prompt, and the one
answering use case shared by text and voice. Imports only ``storage`` of the other domains.
"""
