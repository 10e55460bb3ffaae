"""The answer word Grad-CAM explains: the "key noun" of a VQA answer, and its sub-word token.

GCDR (docs/method.md#key-noun) POS-tags the answer with spaCy ``en_core_web_sm``, takes the first run of consecutive
NOUN / PROPN / PRON tokens and explains the LAST word of that run ("tennis racket" -> "racket").

Taggers:
  ``spacy``    spaCy + ``en_core_web_sm`` (used by ``auto`` when both are importable; ``pip install spacy`` and
               the model package).
  ``lexical``  dependency-free fallback: a word is "nominal" unless it is in a closed-class stop list
               (determiners, prepositions, conjunctions, auxiliaries and common verbs, adverbs, numerals,
               common adjectives such as colours and sizes). First run of nominal words, last word of it;
               when every word is in the stop list, the last word.
One deliberate refinement in both: a possessive ``'s`` continues the run, so "the man's phone" -> "phone"
(GCDR's plain rule stops at the particle and explains "man", the possessor, not the object looked at).

The chosen word is mapped explicitly, by character offsets, onto the sub-word tokens of the VQA tokenizer
(BLIP: BERT wordpiece): by default the LAST sub-token of the word ("skateboard" = skate ##board -> ##board),
optionally the first. (GCDR used the spaCy word index directly as a BPE position, which only agrees for
one-piece words.)
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

_DETERMINERS = """a an the this that these those his her hers their theirs its my mine your yours our ours some any
each every no another other both all either neither few many much several such what which whose""".split()
_PREPOSITIONS = """at on in of to from with by for into onto toward towards near behind under over above below
beneath between across through about around inside outside beside besides next up down off out along against
among upon within without via like than as""".split()
_CONJUNCTIONS = "and or but nor so yet if then because while".split()
_AUXILIARIES_VERBS = """is are was were be been being am do does did doing has have had having can could will would
shall should may might must looking look looks looked watching watch watches staring stare stares holding hold
holds sitting standing lying reading playing eating using talking""".split()
_ADVERBS = """very just also there here not too really maybe probably away straight directly down still only
almost quite somewhere""".split()
_NUMERALS = "one two three four five six seven eight nine ten first second third".split()
_ADJECTIVES = """red blue green yellow black white brown orange pink purple gray grey silver gold dark light
big small large little tall short long old new young left right same open closed empty full other wooden
plastic metal glass round square tiny huge""".split()
STOP_WORDS = frozenset(_DETERMINERS + _PREPOSITIONS + _CONJUNCTIONS + _AUXILIARIES_VERBS + _ADVERBS
                       + _NUMERALS + _ADJECTIVES)
_NOMINAL_TAGS = {"NOUN", "PROPN", "PRON"}
_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)?")
_POSSESSIVE = re.compile(r"['\u2019]s?$", re.IGNORECASE)


@dataclass(frozen=True)
class KeyNoun:
    """The chosen answer word and its character span in the answer text: ``answer[start:end] == word``."""

    word: str
    start: int
    end: int


def _lexical_key_noun(answer: str) -> KeyNoun | None:
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(answer)]
    if not words:
        return None
    run: list[tuple[str, int, int]] = []
    for text, start, end in words:
        lower = text.lower()
        possessive = _POSSESSIVE.search(lower) is not None
        base = _POSSESSIVE.sub("", lower)
        nominal = (base not in STOP_WORDS and not base.isdigit()) or (possessive and run)
        if nominal:
            # "man's": the word itself is "man" (the BERT tokenizer splits off the apostrophe)
            run.append((text[: len(base)], start, start + len(base)) if possessive else (text, start, end))
        elif run:
            break
    word, start, end = run[-1] if run else words[-1]
    return KeyNoun(word, start, end)


@functools.lru_cache(maxsize=1)
def _spacy_model():
    try:
        import spacy

        return spacy.load("en_core_web_sm", disable=["parser", "ner", "lemmatizer"])
    except (ImportError, OSError):
        return None


def _spacy_key_noun(answer: str, nlp) -> KeyNoun | None:
    tokens = [t for t in nlp(answer) if not t.is_space]
    if not tokens:
        return None
    run = []
    for token in tokens:
        if token.pos_ in _NOMINAL_TAGS:
            run.append(token)
        elif run and token.tag_ == "POS":  # possessive 's: the possessor modifies the noun that follows
            continue
        elif run:
            break
    words = [t for t in tokens if any(c.isalnum() for c in t.text)]
    if not run and not words:
        return None
    token = run[-1] if run else words[-1]
    return KeyNoun(token.text, token.idx, token.idx + len(token.text))


def spacy_available() -> bool:
    """True when spaCy and its ``en_core_web_sm`` model can be loaded."""
    return _spacy_model() is not None


def find_key_noun(answer: str, tagger: str = "auto") -> KeyNoun | None:
    """The word of ``answer`` that Grad-CAM explains, or None when the answer has no word.

    tagger: ``auto`` (spaCy when available, else lexical), ``spacy`` (error if unavailable) or ``lexical``.
    Examples (lexical): "tennis racket" -> racket; "a red cup" -> cup; "the man's phone" -> phone;
    "cup on the table" -> cup; "looking at the tv" -> tv; "nothing" -> nothing.
    """
    if tagger not in {"auto", "spacy", "lexical"}:
        raise ValueError(f"unknown key-noun tagger {tagger!r}; use auto, spacy or lexical")
    if tagger in {"auto", "spacy"}:
        nlp = _spacy_model()
        if nlp is not None:
            return _spacy_key_noun(answer, nlp)
        if tagger == "spacy":
            raise ImportError("tagger 'spacy' needs `pip install spacy` and the en_core_web_sm model")
    return _lexical_key_noun(answer)


@dataclass(frozen=True)
class AnswerTokens:
    """An answer tokenised for teacher forcing, with the position Grad-CAM explains.

    token_ids: answer sub-word ids without special tokens (the decoder sees [BOS] + token_ids).
    step:      index into ``token_ids`` of the explained token (the key noun's last/first sub-token).
    key_noun:  the chosen word ("" when the answer had no word and the last token is explained).
    """

    token_ids: list[int]
    step: int
    key_noun: str


def answer_tokens(answer: str, tokenizer, subtoken: str = "last", tagger: str = "auto") -> AnswerTokens | None:
    """Tokenise ``answer`` with the VQA tokenizer and locate the key noun's sub-token; None for an empty answer.

    subtoken: ``last`` (default; the sub-token that completes the word, the analogue of GCDR's choice of the
    run's last word) or ``first``. The answer is re-tokenised from its text, so the explained sequence is the
    canonical tokenisation of the answer string (for BLIP's greedy wordpiece this equals the generated ids).
    """
    if subtoken not in {"last", "first"}:
        raise ValueError(f"subtoken must be 'last' or 'first', not {subtoken!r}")
    encoding = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    token_ids = list(encoding["input_ids"])
    if not token_ids:
        return None
    key = find_key_noun(answer, tagger)
    if key is None:  # GCDR's fallback: the last content token
        return AnswerTokens(token_ids, len(token_ids) - 1, "")
    overlapping = [i for i, (start, end) in enumerate(encoding["offset_mapping"])
                   if start < key.end and end > key.start]
    if not overlapping:  # cannot happen with a consistent tokenizer; explain the last token, say so
        log.warning("key noun %r not found among the tokens of %r; explaining the last token", key.word, answer)
        return AnswerTokens(token_ids, len(token_ids) - 1, key.word)
    step = overlapping[-1] if subtoken == "last" else overlapping[0]
    return AnswerTokens(token_ids, step, key.word)
