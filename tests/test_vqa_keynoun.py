"""Key noun of a VQA answer (GCDR 9.3) and its sub-word token in the BLIP (BERT wordpiece) tokenizer."""

import pytest

from gcdr.vqa.blip import build_processor
from gcdr.vqa.keynoun import answer_tokens, find_key_noun


@pytest.mark.parametrize("answer, expected", [
    ("tennis racket", "racket"),          # last word of the first noun run
    ("a red cup", "cup"),                 # determiner and colour adjective are not part of the run
    ("the man's phone", "phone"),         # the possessive continues the run: the object, not the possessor
    ("cup on the table", "cup"),          # the FIRST run wins
    ("looking at the tv", "tv"),
    ("his skateboard", "skateboard"),
    ("two dogs", "dogs"),
    ("nothing", "nothing"),
    ("the", "the"),                       # no nominal word: the last word
    ("TV.", "TV"),
])
def test_lexical_key_noun(answer, expected):
    key = find_key_noun(answer, tagger="lexical")
    assert key.word == expected
    assert answer[key.start:key.end] == expected


def test_no_word_gives_none():
    assert find_key_noun("", tagger="lexical") is None
    assert find_key_noun(" ?! ", tagger="lexical") is None


def test_unknown_tagger_is_an_error():
    with pytest.raises(ValueError, match="tagger"):
        find_key_noun("a cup", tagger="nltk")


@pytest.fixture(scope="module")
def tokenizer():
    # "skateboard" is not in the vocabulary: wordpiece splits it into skate + ##board
    return build_processor("tennis racket skate ##board the man phone a red cup".split()).tokenizer


def test_key_noun_maps_to_its_last_subtoken(tokenizer):
    tokens = answer_tokens("a skateboard", tokenizer, tagger="lexical")
    assert tokenizer.convert_ids_to_tokens(tokens.token_ids) == ["a", "skate", "##board"]
    assert tokens.step == 2 and tokens.key_noun == "skateboard"
    first = answer_tokens("a skateboard", tokenizer, subtoken="first", tagger="lexical")
    assert first.step == 1


def test_key_noun_position_counts_subtokens_before_it(tokenizer):
    # "the man's phone" -> the, man, ', s, phone: the key noun is token 4, not word 2
    tokens = answer_tokens("the man's phone", tokenizer, tagger="lexical")
    assert tokens.key_noun == "phone"
    assert tokenizer.convert_ids_to_tokens(tokens.token_ids[tokens.step]) == "phone"
    assert tokens.step == 4
    tokens = answer_tokens("tennis racket", tokenizer, tagger="lexical")
    assert (tokens.step, tokens.key_noun) == (1, "racket")


def test_empty_answer_has_no_tokens(tokenizer):
    assert answer_tokens("", tokenizer, tagger="lexical") is None
