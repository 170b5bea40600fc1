"""Stored state: the database (one aiosqlite connection) and the stores on it: guild settings and voice opt-outs,
the threads the bot started, the questions kept at a shutdown. Imports no other domain.
"""
