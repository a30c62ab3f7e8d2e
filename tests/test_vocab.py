"""Tests for minimoe/vocab.py: the word lists and the whitespace tokenizer.

Checks that word lists a task must tell apart are disjoint, that label words never double as
input words, and the tokenizer's round trip, special ids, unknown-word handling and decoding
rules (stop at eos, skip pad/bos). Run: python -m pytest tests/test_vocab.py -q
"""

import pytest

from minimoe.errors import DataError
from minimoe.vocab import (ATTRIBUTE_POOLS, FACT_TEMPLATES, GENERIC_TEMPLATES, INSTRUCTION_WORDS,
                           NAMES, SENTIMENT_POOLS, SIZE_POOLS, SPECIALS, TOPIC_POOLS, VOCABULARY,
                           WORD_TYPES, YES_NO, Tokenizer, default_tokenizer)

CLASS_POOLS = {**SENTIMENT_POOLS, **TOPIC_POOLS, **SIZE_POOLS}


def test_typed_and_class_pools_are_disjoint():
    pools = {"name": NAMES, **ATTRIBUTE_POOLS, **CLASS_POOLS}
    owner = {}
    for kind, words in pools.items():
        assert len(set(words)) == len(words), f"{kind} repeats a word"
        for w in words:
            assert w not in owner, f"{w!r} is in both {owner[w]} and {kind}"
            owner[w] = kind
    assert set(WORD_TYPES) == {"name", *ATTRIBUTE_POOLS}


def test_label_words_never_occur_in_input_pools():
    labels = {*SENTIMENT_POOLS, *TOPIC_POOLS, *SIZE_POOLS, *YES_NO, *WORD_TYPES}
    input_words = {w for pool in (NAMES, *ATTRIBUTE_POOLS.values(), *CLASS_POOLS.values()) for w in pool}
    assert not labels & input_words


def test_vocabulary_is_small_unique_and_covers_templates():
    assert 150 <= len(VOCABULARY) <= 400  # "a few hundred words"
    assert len(set(VOCABULARY)) == len(VOCABULARY)
    assert not set(SPECIALS) & set(VOCABULARY)
    words = {w for t in (*GENERIC_TEMPLATES, *(t for ts in FACT_TEMPLATES.values() for t in ts))
             for w in t.split() if not w.startswith("{")}
    assert words | set(INSTRUCTION_WORDS) <= set(VOCABULARY)


def test_special_ids_are_fixed():
    tok = default_tokenizer()
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id, tok.sep_id) == (0, 1, 2, 3, 4, 5)
    assert tok.words[:6] == list(SPECIALS) and tok.vocab_size == len(VOCABULARY) + 6
    assert tok.encode("<sep>") == [tok.sep_id]


def test_round_trip_of_every_word():
    tok = default_tokenizer()
    text = " ".join(VOCABULARY)
    ids = tok.encode(text)
    assert len(ids) == len(VOCABULARY) and len(set(ids)) == len(ids)
    assert tok.decode(ids) == text
    assert tok.encode("  bako \t rome\n") == tok.encode("bako rome")  # whitespace-level


def test_unknown_word_strict_and_lenient():
    tok = default_tokenizer()
    with pytest.raises(DataError, match="'bakko'.*bako"):
        tok.encode("bakko lives in rome")
    assert tok.encode("bakko rome", strict=False) == [tok.unk_id, tok.ids["rome"]]


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    tok = default_tokenizer()
    rome, oslo = tok.ids["rome"], tok.ids["oslo"]
    assert tok.decode([tok.bos_id, rome, tok.pad_id, oslo, tok.eos_id, rome]) == "rome oslo"
    assert tok.decode([]) == "" and tok.decode([tok.eos_id, rome]) == ""
    assert tok.encode("rome", bos=True, eos=True) == [tok.bos_id, rome, tok.eos_id]
    with pytest.raises(DataError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_from_texts_to_dict_and_bad_words():
    tok = Tokenizer.from_texts(["b a", "c <sep> a"])
    assert tok.words[6:] == ["a", "b", "c"]
    assert Tokenizer.from_dict(tok.to_dict()) == tok
    with pytest.raises(DataError, match="more than once"):
        Tokenizer(["a", "b", "a"])
    with pytest.raises(DataError, match="whitespace"):
        Tokenizer(["a b"])
