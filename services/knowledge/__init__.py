"""The server's documents: reading and chunking them, the ChromaDB index and its manifests, lexical search, and
the vocabulary of each guild's documents. Imports no other domain.
"""
