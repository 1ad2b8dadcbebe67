"""Text as the engines take it: split into sentences, or sentences packed up to a limit.

Engines stream a sentence at a time (a listener hears the first while the rest is
made), and XTTS takes at most a model-defined number of characters per call. Splitting
here needs no language model (no spacy): a sentence ends at a stop followed by space,
CJK stops included.
"""

from __future__ import annotations

import re
import textwrap

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
