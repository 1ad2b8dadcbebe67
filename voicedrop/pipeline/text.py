"""Text as the engines take it: words said another way (a lexicon), split into sentences,
or sentences packed up to a limit.

Engines stream a sentence at a time (a listener hears the first while the rest is
made), and XTTS takes at most a model-defined number of characters per call. Splitting
here needs no language model (no spacy): a sentence ends at a stop followed by space,
CJK stops included.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field

SENTENCE_END = re.compile(r"(?<=[.!?…;:\u3002\uff01\uff1f\uff1b\uff1a])\s+")


def sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, empty ones left out."""
    return [s for s in (p.strip() for p in SENTENCE_END.split(text.strip())) if s]


def split_text(text: str, limit: int) -> list[str]:
    """Sentences packed into chunks of at most `limit` characters; a sentence longer than
    the limit is wrapped at word boundaries."""
    chunks: list[str] = []
    for sentence in sentences(text):
        pieces = (
            textwrap.wrap(sentence, limit, break_on_hyphens=False)
            if len(sentence) > limit
            else [sentence]
        )
        for piece in pieces:
            if chunks and len(chunks[-1]) + 1 + len(piece) <= limit:
                chunks[-1] = f"{chunks[-1]} {piece}"
            else:
                chunks.append(piece)
    return chunks


@dataclass
class Lexicon:
    """Words said another way (names, acronyms, brands): word → respelling, whole words.

    An entry written in lower case matches the word in any case ("voicedrop" also
    "Voicedrop"); one with a capital letter matches only as written ("NAS", not "nas").
    Longer entries go first, and what was put in is never replaced again. `counts` says
    how often each entry was used, for the report.
    """

    entries: Mapping[str, str]
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Each entry is a group of its own, and a match says which entry it was: looking
        # the matched text up again would need the regex engine's case folding, which is
        # not str.lower's nor str.casefold's ('İzmir' matches izmir, a long s matches s).
        # longest first; of equal length, an entry as written before one in any case
        self._words = sorted(self.entries, key=lambda w: (-len(w), w == w.lower()))
        alternatives = [
            f"(?P<e{i}>(?i:{re.escape(w)}))" if w == w.lower() else f"(?P<e{i}>{re.escape(w)})"
            for i, w in enumerate(self._words)
        ]
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)") if self._words else None
        )

    @classmethod
    def of(
        cls, tables: Mapping[str, Mapping[str, str]], language: str, own: Mapping[str, str]
    ) -> Lexicon:
        """The configuration's tables for `language` (its base language's, then its own:
        `en`, then `en-us`), then the job's own entries, which win."""
        tag = language.lower().replace("_", "-")
        merged: dict[str, str] = {}
        for key in (tag.split("-")[0], tag):
            for name, table in tables.items():
                if name.lower().replace("_", "-") == key:
                    merged.update(table)
        merged.update(own)
        return cls(merged)

    def apply(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(self._say, text)

    def _say(self, found: re.Match[str]) -> str:
        assert found.lastgroup is not None  # every alternative is a named group
        entry = self._words[int(found.lastgroup[1:])]
        self.counts[entry] = self.counts.get(entry, 0) + 1
        return self.entries[entry]

    def used(self) -> list[tuple[str, str, int]]:
        """(word, respelling, count) of the entries used, in the order of the table."""
        return [(w, self.entries[w], self.counts[w]) for w in self.entries if w in self.counts]
