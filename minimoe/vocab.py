"""The TinyCrossFit language: hand-written word lists and a whitespace word-level tokenizer.

Every word the synthetic suite can produce is listed here, grouped by role, so a learner can
read the whole language in one screen (lesson 05). Word lists that a task needs to
tell apart (names, cities, colours, ...) are disjoint, which `tests/test_vocab.py` checks.
The tokenizer maps whitespace-separated words to ids; the special tokens come first.
Read next: `minimoe/knowledge.py` (the knowledge base), then `minimoe/tasks.py` (the tasks built
from these words).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from minimoe.errors import DataError

# --- special tokens: ids 0..5 in this order (pad must be 0: batches are zero-padded) ---------
PAD, BOS, EOS, UNK, MASK, SEP = "<pad>", "<bos>", "<eos>", "<unk>", "<mask>", "<sep>"
SPECIALS = (PAD, BOS, EOS, UNK, MASK, SEP)

# --- typed words: the knowledge base's entities and attribute values ---------------------
NAMES = (  # synthetic people; a knowledge base uses the first n_entities of a seeded shuffle
    "bako", "dilu", "fena", "gomi", "hupa", "jiro", "kesa", "lumo", "mavi", "nolu", "pira",
    "rudo", "sefi", "tamu", "vexa", "wilo", "yuna", "zeto", "bori", "dane", "fiko", "gula",
    "hemi", "joka", "kiru", "lase", "mopi", "nira", "pelo", "rami", "sura", "tobi", "vani",
    "wuko", "yela", "zimu", "bela", "doru", "fami", "gesi", "hoka", "jume", "kalo", "lira",
    "mesu", "nobi", "pazu", "reko", "sila", "tuma", "vodi", "wena", "yoru", "zala", "buni",
    "deki", "foru", "gana", "hilo", "jesa", "kuma", "lobe", "mika", "nune",
)
CITIES = ("rome", "oslo", "lima", "cairo", "delhi", "tokyo", "quito", "dakar")
COLOURS = ("red", "blue", "green", "yellow", "pink", "black", "white", "brown")
JOBS = ("baker", "doctor", "farmer", "pilot", "singer", "teacher", "painter", "driver")
PETS = ("cat", "dog", "horse", "rabbit", "parrot", "goat", "duck", "hamster")
FOODS = ("rice", "bread", "soup", "cheese", "apple", "honey", "pasta", "salad")

# A word's "type" is what extractive tasks select by and what `classify_type` names.
# The name pool of a suite is its knowledge base's entities, so it is filled in there.
ATTRIBUTE_POOLS = {"city": CITIES, "colour": COLOURS, "job": JOBS, "pet": PETS, "food": FOODS}
WORD_TYPES = ("name", "city", "colour", "job", "pet", "food")

# --- class-bearing words for classification (the label word itself never occurs in an input)
SENTIMENT_POOLS = {
    "positive": ("good", "great", "happy", "nice", "lovely", "bright", "kind", "calm", "fun", "sweet"),
    "negative": ("bad", "awful", "sad", "dull", "cruel", "angry", "ugly", "rude", "poor", "sour"),
}
TOPIC_POOLS = {
    "sport": ("ball", "goal", "race", "team", "match", "coach", "score", "medal"),
    "music": ("song", "drum", "piano", "guitar", "tune", "choir", "band", "opera"),
    "weather": ("rain", "snow", "wind", "storm", "cloud", "sunshine", "fog", "frost"),
    "school": ("book", "exam", "class", "pencil", "lesson", "desk", "homework", "chalk"),
}
SIZE_POOLS = {
    "big": ("huge", "giant", "large", "tall", "wide", "vast", "heavy", "long"),
    "small": ("tiny", "little", "short", "thin", "narrow", "slim", "light", "low"),
}
YES_NO = ("yes", "no")

# --- glue words --------------------------------------------------------------------------
FILLERS = ("the", "a", "and", "then", "with", "near", "saw", "met", "today", "later")
PUNCTUATION = (",", "[", "]")  # group separators and the brackets of the marked-span tasks
# Instruction words: every instruction is 3–8 of these, so an unseen task's instruction is a
# new combination of words that seen tasks' instructions already use.
INSTRUCTION_WORDS = (
    "copy", "recall", "tell", "same", "the", "of", "for", "and", "in", "first", "last", "most",
    "brackets", "word", "words", "name", "city", "colour", "job", "pet", "food", "friend",
    "sentiment", "topic", "type", "size",
)
# Pre-training corpus templates: each relation stated three ways (a fact seen in
# one phrasing only is memorised but hard to use; several phrasings make it usable).
FACT_TEMPLATES = {
    "city": ("{x} lives in {v}", "{x} is from {v}", "the home of {x} is {v}"),
    "colour": ("{x} likes the colour {v}", "the favourite colour of {x} is {v}", "{x} wears {v}"),
    "job": ("{x} works as a {v}", "{x} is a {v}", "the job of {x} is {v}"),
    "pet": ("{x} has a {v}", "the pet of {x} is a {v}", "{x} walks a {v}"),
    "food": ("{x} eats {v}", "{x} likes to eat {v}", "the food of {x} is {v}"),
    "friend": ("{x} is a friend of {v}", "the friend of {x} is {v}", "{x} plays with {v}"),
}
# Generic sentences for denoising: slots are filled from the pools above at random.
GENERIC_TEMPLATES = (
    "the {topic} was {sentiment}", "a {size} {pet} saw the {topic}",
    "the {job} from {city} was {sentiment}", "{name} saw a {size} {topic}",
    "the {colour} {topic} was {size}", "{name} met {name} near the {topic}",
)


def _template_words() -> list[str]:
    words = []
    for template in (*GENERIC_TEMPLATES, *(t for ts in FACT_TEMPLATES.values() for t in ts)):
        words += [w for w in template.split() if not w.startswith("{")]
    return words


def _dedup(words: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    return [w for w in words if not (w in seen or seen.add(w))]


# The synthetic suite's whole vocabulary, in a fixed order (ids never depend on a seed).
VOCABULARY: tuple[str, ...] = tuple(_dedup([
    *NAMES, *CITIES, *COLOURS, *JOBS, *PETS, *FOODS,
    *(w for pool in SENTIMENT_POOLS.values() for w in pool), *SENTIMENT_POOLS,
    *(w for pool in TOPIC_POOLS.values() for w in pool), *TOPIC_POOLS,
    *(w for pool in SIZE_POOLS.values() for w in pool), *SIZE_POOLS,
    *YES_NO, *FILLERS, *PUNCTUATION, *INSTRUCTION_WORDS, *_template_words(),
]))


class Tokenizer:
    """Whitespace word-level tokenizer: the special tokens first (pad = 0), then `words`.

    >>> tok = Tokenizer(["hello", "world"])
    >>> tok.encode("hello world"), tok.decode([tok.bos_id, 6, 7, tok.eos_id, 6])
    ([6, 7], 'hello world')
    """

    def __init__(self, words: Iterable[str]):
        words = [w for w in words if w not in SPECIALS]
        for w in words:
            if not isinstance(w, str) or not w or w != w.strip() or len(w.split()) != 1:
                raise DataError(f"vocabulary word {w!r} is empty or contains whitespace; "
                                f"words are whitespace-separated, so each must be one token.")
        if len(set(words)) != len(words):
            dupes = sorted({w for w in words if words.count(w) > 1})
            raise DataError(f"vocabulary lists {dupes[:5]} more than once; list each word once.")
        self.words: list[str] = [*SPECIALS, *words]
        self.ids: dict[str, int] = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id, self.mask_id, self.sep_id = range(len(SPECIALS))

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Tokenizer":
        """A tokenizer over every word of `texts`, sorted (the same texts give the same ids)."""
        return cls(sorted({w for text in texts for w in text.split()} - set(SPECIALS)))

    def encode(self, text: str, strict: bool = True, bos: bool = False, eos: bool = False) -> list[int]:
        """Words → ids. strict: an unknown word raises DataError naming it; else it maps to unk_id."""
        ids = [self.bos_id] if bos else []
        for word in text.split():
            i = self.ids.get(word)
            if i is None:
                if strict:
                    near = difflib.get_close_matches(word, self.words, n=3)
                    raise DataError(f"unknown word {word!r} in {text!r} (nearest known: {near}); "
                                    f"add it to the vocabulary or encode with strict=False (→ {UNK}).")
                i = self.unk_id
            ids.append(i)
        return ids + [self.eos_id] if eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids → text: stops at the first eos, skips pad and bos (a greedy decode's tail is junk)."""
        out = []
        for i in ids:
            i = int(i)  # accepts plain ints, numpy ints and 0-d tensors alike
            if i == self.eos_id:
                break
            if not 0 <= i < len(self.words):
                raise DataError(f"token id {i} is outside the vocabulary (size {len(self.words)}); "
                                f"was the model built for another tokenizer?")
            if i not in (self.pad_id, self.bos_id):
                out.append(self.words[i])
        return " ".join(out)

    def to_dict(self) -> dict[str, list[str]]:
        """What a checkpoint stores; `Tokenizer.from_dict` rebuilds the same ids."""
        return {"words": self.words[len(SPECIALS):]}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[str]]) -> "Tokenizer":
        return cls(d["words"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.words == other.words

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


def default_tokenizer() -> Tokenizer:
    """The tokenizer of every synthetic suite (its ids do not depend on any seed)."""
    return Tokenizer(VOCABULARY)
