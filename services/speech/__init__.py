"""Speech: audio conversion, speech to text (faster-whisper), text to speech (Piper), the bundled models and
the Hub, Whisper's prompt, and the text that is spoken. Imports no other domain.
"""
