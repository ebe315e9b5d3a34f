"""The book's words, as the sampler uses them: a trie over lower-case letters, unrolled into a
transition table [states, vocab] that the compiled sampling loop reads with one gather per step.

A word is a maximal run of letters (quality.words), compared in lower case. The states:

    OFF   the free sampler: every character allowed, the state never changes
    ROOT  between words: any letter that starts a word of the book, or any non-letter
    FREE  inside a word the book does not have (a seed's own): anything, until the next non-letter
    3...  inside a word: the letters so far are a prefix of the book's words; a letter that extends
          it, or a non-letter only if the letters so far are a whole word

table[s, c] is the state after character id c in state s, or -1 where c is not allowed. No state
is left without an allowed character: a prefix that is not a whole word goes on to a longer one.
The state after any text depends only on its trailing run of letters (`state_after`), so a stored
text's tail is all a continuation needs to go on in the same state.

Saved in a model folder as lexicon.txt.gz, one word a line, sorted, so a folder loads with nothing
else; `from_texts` rebuilds it from the training side deterministically.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from model.quality import is_letter
from model.quality import words as text_words
from model.vocab import UNK_ID, Vocab

LEXICON_FILE = "lexicon.txt.gz"
OFF, ROOT, FREE = 0, 1, 2
NOT_ALLOWED = -1


class Lexicon:
    """The words a book uses, and the trie the sampler walks over them."""

    def __init__(self, words):
        self.words = sorted({w.lower() for w in words if is_letter(w)})
        # the trie from the sorted words: a word shares its path with the one before up to their
        # common prefix; the rest are new states. parents[k] --letters[k]--> state FREE + 1 + k
        parents, letters, whole = [], [], []
        path, previous = [ROOT], ""
        for word in self.words:
            common = len(os.path.commonprefix((word, previous)))
            del path[common + 1 :]
            for letter in word[common:]:
                parents.append(path[-1])
                letters.append(letter)
                path.append(FREE + len(parents))
            whole.append(path[-1])
            previous = word
        self._parents, self._letters = np.array(parents, np.int32), letters
        self._children = dict(zip(zip(parents, letters), range(FREE + 1, FREE + 1 + len(parents))))
        self._whole = np.array(whole, np.int32)  # states where the letters so far make a word
        self._whole_set = frozenset(whole)
        self.states = FREE + 1 + len(parents)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return self.walk(word.lower()) in self._whole_set

    def walk(self, letters: str, state: int = ROOT) -> int:
        """The state after lower-case `letters` from `state`: FREE once they leave the book's words."""
        for letter in letters:
            if state == FREE:
                return FREE
            state = self._children.get((state, letter), FREE)
        return state

    def state_after(self, text: str) -> int:
        """The sampler's state after `text`: ROOT after a non-letter (or nothing), else the walk of
        the trailing letters (FREE when they are no prefix of a book word)."""
        start = len(text)
        while start > 0 and is_letter(text[start - 1]):
            start -= 1
        return self.walk(text[start:].lower())

    def table(self, vocab: Vocab) -> np.ndarray:
        """The transition table [states, len(vocab)] int32 (-1: not allowed) over this vocabulary's ids."""
        # first over classes of characters: 0 any non-letter, then one per lower-case letter
        lower = [c.lower() if is_letter(c) else "" for c in vocab.chars]
        classes = {letter: k for k, letter in enumerate(dict.fromkeys(["", *lower]))}
        by_class = np.full([self.states, len(classes)], NOT_ALLOWED, np.int32)
        by_class[[ROOT, FREE], 0] = ROOT
        by_class[FREE, 1:] = FREE
        by_class[self._whole, 0] = ROOT  # a word may end here
        known = np.array([letter in classes for letter in self._letters], bool)
        letter_class = np.array([classes.get(letter, 0) for letter in self._letters], np.int32)
        children = np.arange(FREE + 1, self.states, dtype=np.int32)
        by_class[self._parents[known], letter_class[known]] = children[known]
        # then each id takes its class's column; the unknown id is never allowed
        table = by_class[:, [0] + [classes[letter] for letter in lower]]
        table[:, UNK_ID] = NOT_ALLOWED
        table[OFF] = OFF
        table[OFF, UNK_ID] = NOT_ALLOWED
        return table

    # a model folder's copy ---------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts, vocab: Vocab | None = None) -> "Lexicon":
        """Every word of the texts (each read on its own: a word cut at a text's end is left out);
        with `vocab`, only the words its characters can write."""
        found = {w for text in texts for w in text_words(text)}
        if vocab is not None:
            writable = {c.lower() for c in vocab.chars if is_letter(c)}
            found = {w for w in found if set(w) <= writable}
        return cls(found)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / LEXICON_FILE
        data = ("\n".join(self.words) + "\n").encode("utf-8")
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0, filename="") as out:
            out.write(data)  # mtime 0, no name: the same words give the same bytes
        path.write_bytes(buffer.getvalue())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Lexicon | None":
        """The folder's lexicon, or None when it has none (such a model can only write freely)."""
        path = Path(folder) / LEXICON_FILE
        if not path.is_file():
            return None
        return cls(gzip.decompress(path.read_bytes()).decode("utf-8").split())
