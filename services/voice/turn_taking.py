"""End of turn from what was said: does a member's transcript so far look like a finished request?

The endpointer (``services.voice.endpointing``) ends a turn after a fixed silence. A member who stops after "What is
the" is not finished, one who stops after "What time is it?" is; semantic end-of-turn detection (LiveKit's turn
detector, pipecat's Smart Turn, OpenAI's "semantic VAD") uses that to answer after a short silence when the words
are complete and to wait longer when they trail off. Those use a model on the text or the audio; this is a rule on
the words of the speculative transcript (``services.voice.conversation``), which costs nothing and needs no
model: a transcript is incomplete when it ends in a word that needs a continuation (an article, preposition,
conjunction, auxiliary, pronoun subject, filler, a verb that takes an object such as "explain"; but not a verb or
preposition whose object is the question's wh-phrase: "What do you mean", "What does GGUF stand for"), when it is a
question whose subject has no verb yet ("Why does the bot"), or when it is a lone word. Whisper ends fragments with
"." or "?" too ("What is the?"), so those are ignored; but it writes "..." where speech trails off, a subtitle
convention it learnt (19 of 144 first halves cut out of a sentence ended so, none of 144 whole questions did), and
that, a comma or a dash at the end makes a transcript incomplete.

Words alone cannot tell "What is the default" from "What is the default context length?". Whisper's doubt can:
its probability that the audio held no speech (``Transcript.no_speech_prob``) was above 0.08 on 91% of 144 first
halves cut out of a sentence read whole, which break off mid-intonation (median 0.16), and on 10% of 144 whole
questions (median 0.03; the bundled tiny.en decoding Piper speech through Opus, in the short window;
``docs/performance.md``). Words that read as finished but come with that doubt make the turn ``UNSURE``: the
fallback silence limit decides it.

The rule is English: its words are English function words, and on another language's words it guesses ("Quelle est
la" and "Was ist der" end in no English word it knows, so they read as finished). The decision is therefore behind an
interface, ``EndOfTurn`` (``decide(heard) -> TurnEnd`` on a ``Heard``: the transcript's text, language and Whisper's
doubt, as ``services.speech.stt.Transcript`` carries them), with the rule as its English implementation
(``EnglishWords``), and ``end_of_turn`` picks by the language Whisper reports: English ("en") gets the rule, any other
language ``UNSURE``, so the silence limit (ENDPOINT_SILENCE_MS) decides, never the shortest wait. An unknown language
(None: a transcriber that does not say) is ``UNSURE`` too; the English-only models (the bundled tiny.en, any ``.en``)
are told their language and report "en", so they are never unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

_WORD = re.compile(r"[a-z0-9']+")
_TRAILING_OFF = re.compile(r"(\.\.\.|\u2026|,|-|\u2014|\u2013)\s*$")  # "Where can I find...", "so,"

_PREPOSITIONS = frozenset("""
    of to in on at by for with from into onto about over under after before between through during without
    than like as per via against among around near
""".split())
# Verbs that take an object: a sentence ending in one goes on ("Where can I find"), unless its wh-phrase is that
# object ("What can I find").
_VERBS_WITH_OBJECT = frozenset("""
    explain tell show describe know mean wonder want need wanted say said ask asked use have
    find support give put bring make get include contain mention recommend
""".split())
# Words after which an English sentence goes on (the function words of the field's lists, plus fillers).
_TRAILING = _PREPOSITIONS | _VERBS_WITH_OBJECT | frozenset("""
    a an the this that these those my your his her its our their some any every each no which what whose
    and or but nor so because if when while although though unless until whether where why how who whom
    is are was were be been being am does did have has had can could will would shall should may might must
    i he she we they it's i'm you're we're they're there's what's let's
    not very really just also quite
    um uh er erm hmm mm so
    wondering using
""".split())

_OBJECTS = frozenset("me us him them".split())
_SUBJECT_PRONOUNS = frozenset("i you we they he she it".split())
_TELLING = frozenset("tell show give ask teach remind let help".split())
_COPULAS = frozenset("is are was were".split())
_WH = frozenset("what which who whom whose where when why how".split())
_NOMINAL_WH = frozenset("what which who whom whose".split())
_AUX = frozenset("do does did can could will would shall should may might must".split())
_DETERMINERS = frozenset("a an the this that these those my your his her its our their some any".split())

# Short replies that are whole turns on their own.
_COMPLETE_SHORT = frozenset("""
    yes no yeah yep nope okay ok sure thanks thank hello hi hey bye goodbye stop please right great cool
    wait continue again
""".split())


class TurnEnd(Enum):
    """What a transcript says about the end of the turn."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNSURE = "unsure"


ENGLISH = "en"
"""The ISO 639-1 code Whisper reports for English: the language ``EnglishWords`` is written for."""


class Heard(Protocol):
    """What the end of a turn is decided on: a member's words so far, as the recogniser heard them
    (``services.speech.stt.Transcript`` is one)."""

    @property
    def text(self) -> str:
        """The words, any case and punctuation; "" when nothing was heard."""

    @property
    def language(self) -> str | None:
        """ISO 639-1 code of their language ("en", "fr"), as faster-whisper reports it; None when unknown."""

    @property
    def no_speech_prob(self) -> float | None:
        """The recogniser's probability (0..1) that the audio held no speech; None when unknown."""


class EndOfTurn(Protocol):
    """An end-of-turn decision: what ``heard`` says about the end of the turn."""

    def decide(self, heard: Heard) -> TurnEnd:
        """``COMPLETE`` (end after the shortest silence, ENDPOINT_COMPLETE_MS), ``INCOMPLETE`` (wait the longest,
        ENDPOINT_INCOMPLETE_MS) or ``UNSURE`` (the silence limit, ENDPOINT_SILENCE_MS, decides)."""


@dataclass(frozen=True, slots=True)
class EnglishWords:
    """The English implementation of ``EndOfTurn``: the rule on the words (see the module's docstring), with
    Whisper's doubt; it ignores ``heard.language``, so give it English only (``end_of_turn`` does).

    sure_no_speech_prob: words that read as finished are ``UNSURE`` when ``heard.no_speech_prob`` (0..1) is above
        this (Settings.ENDPOINT_SURE_NO_SPEECH_PROB); 1 never is.
    """

    sure_no_speech_prob: float = 1.0

    def decide(self, heard: Heard) -> TurnEnd:
        """Whether ``heard.text`` reads as a finished request (``COMPLETE``) or trails off (``INCOMPLETE``);
        ``UNSURE`` when it reads as finished but ``heard.no_speech_prob`` (None: no doubt known) is above
        ``sure_no_speech_prob``. An empty transcript is incomplete."""
        end = _turn_end_of_words(heard.text)
        if end is TurnEnd.COMPLETE and heard.no_speech_prob is not None and (
                heard.no_speech_prob > self.sure_no_speech_prob):
            return TurnEnd.UNSURE
        return end


def end_of_turn(heard: Heard, sure_no_speech_prob: float = 1.0) -> TurnEnd:
    """The end of turn for ``heard`` in its language: ``EnglishWords(sure_no_speech_prob)`` when it is English
    (``heard.language == "en"``); ``UNSURE`` for any other language and for an unknown one (None), so the silence
    limit decides and a member speaking another language is never answered after the shortest wait."""
    if heard.language == ENGLISH:
        return EnglishWords(sure_no_speech_prob).decide(heard)
    return TurnEnd.UNSURE


def _turn_end_of_words(transcript: str) -> TurnEnd:
    words = _WORD.findall(transcript.lower().replace("\u2019", "'"))
    if not words or _TRAILING_OFF.search(transcript):
        return TurnEnd.INCOMPLETE
    if len(words) == 1:
        return TurnEnd.COMPLETE if words[0] in _COMPLETE_SHORT else TurnEnd.INCOMPLETE
    if words[-1] in _COPULAS and _WH.intersection(words[1:-2]):  # "Could you explain what a context window is"
        return TurnEnd.COMPLETE
    # "What do you mean", "How much memory does it need", "What does GGUF stand for" (a stranded preposition)
    if (words[-1] in _VERBS_WITH_OBJECT or words[-1] in _PREPOSITIONS) and _object_question(words):
        return TurnEnd.COMPLETE
    if len(words) > 3 and words[-2] in ("and", "or") and "between" in words[:-3]:  # "between chat and ask"
        return TurnEnd.COMPLETE
    if _relative_clause_with_preposition(words):  # "How do I change the voice you speak with"
        return TurnEnd.COMPLETE
    if words[-1] in _TRAILING:
        return TurnEnd.INCOMPLETE
    if words[-1] in _OBJECTS and words[-2] in _TELLING:  # "Can you tell me"
        return TurnEnd.INCOMPLETE
    if _subject_without_verb(words):
        return TurnEnd.INCOMPLETE
    return TurnEnd.COMPLETE


def _object_question(words: list[str]) -> bool:
    """A question whose wh-phrase is the object of its last word (a verb or a preposition): a wh-word first, then
    do-support or a modal with a subject after it ("What do you mean", "What does GGUF stand for"); not "Who can
    use", where the wh-word is the subject and the verb still lacks its object."""
    # a wh-phrase that can be an object: "what", "which", "who"... or "how much/many" + noun; not "how", "why"
    if words[0] not in _NOMINAL_WH and words[:2] not in (["how", "much"], ["how", "many"]):
        return False
    for at in range(1, min(len(words) - 1, 5)):
        if words[at] in _AUX:
            return at + 1 < len(words) - 1  # a subject between the auxiliary and the verb
    return False


def _relative_clause_with_preposition(words: list[str]) -> bool:
    """A stranded preposition closing a relative clause without "that": a noun, a pronoun subject, a verb, the
    preposition ("the voice you speak with"); not "Can I talk to", where the word before the subject is an
    auxiliary."""
    return (len(words) >= 4 and words[-1] in _PREPOSITIONS and words[-3] in _SUBJECT_PRONOUNS
            and words[-4] not in _TRAILING and words[-4] not in _AUX and words[-2] not in _TRAILING)


def _subject_without_verb(words: list[str]) -> bool:
    """A question with do-support or a modal ("why does", "which port does", "can you") followed by no more than a
    subject: a name, or a determiner and a noun ("Why does the bot", "Which port does Ollama")."""
    for at, word in enumerate(words[:4]):
        if word in _AUX and (at == 0 or words[0] in _WH):
            rest = words[at + 1:]
            return len(rest) <= 1 or (len(rest) == 2 and rest[0] in _DETERMINERS)
    return False
