"""What may be said on air: every narration line passes this filter before any text leaves for a TTS provider.

It removes personal data (emails, phone numbers, street addresses, card-like numbers, names outside the
allow-list) and configured banned words, or refuses the line when what is left would mislead or say nothing.
`Verdict.removed` counts what was taken out by kind; it never holds the removed text, so it can be logged.

Names are found without a language model: a capitalised word (or a run of them) that is not at the start of a
sentence, a capitalised run of two or more words anywhere, or a word after a title (Mr, Dr, ...) is a name unless
every word of it is on the allow-list (the cameras' and speakers' names, the configured keywords, the brand).
A capitalised word that opens a sentence alone is kept only when it is a common word ("Applause from the room.",
`_OPENERS`); any other ("John said hi.") is taken for a name. What is removed as a name becomes "someone".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"\b(?:https?://|www\.)\S+", re.I)
# 13-19 digits, optionally grouped by spaces or dashes: card-like, whether or not its Luhn digit checks out
CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
# a phone number: an optional +country, then 7-15 digits in groups separated by spaces, dots, dashes or brackets
PHONE = re.compile(r"(?<![\w])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{1,4}){1,6}"
                   r"(?:[\s.-]?[A-Z]{4,})?(?![\w])")
STREET_WORDS = (r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|square|sq|way|"
                r"terrace|parkway|pkwy|highway|hwy|close|crescent|strasse|straße|rue|calle|via")
# "221B Baker Street", "10 Downing St.", "1600 Pennsylvania Avenue NW"
ADDRESS = re.compile(rf"\b\d{{1,5}}[A-Za-z]?\s+(?:[A-Za-z][\w'-]*\s+){{0,3}}(?:{STREET_WORDS})\b\.?"
                     rf"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?", re.I)
# UK postcodes, US ZIP+4, a US state and its ZIP ("DC 20500"), anything said to be a ZIP/postcode
POSTCODE = re.compile(r"\b(?:[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}|\d{5}-\d{4}|[A-Z]{2}\s+\d{5})\b"
                      r"|\b(?:zip|zip code|postcode|postal code)\s*:?\s*[\w-]+", re.I)
BARE_URL = re.compile(r"(?<![\w@.-])(?:[\w-]+\.)+(?:com|org|net|io|co|uk|de|fr|es|it|nl|eu|tv|gov|edu|info|biz"
                      r"|me|ai|app|dev)\b(?:/\S*)?", re.I)
HANDLE = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{2,}")
IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
SPELLED_EMAIL = re.compile(r"\b[\w.+-]+\s*(?:\(at\)|\[at\]|\s@\s|\s+at\s+)\s*[\w-]+\s*(?:\(dot\)|\[dot\]|\s+dot\s+)"
                           r"\s*[a-z]{2,}\b", re.I)
ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
TITLE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof|Sir|Dame|Lord|Lady)\.?\s+[^\W\d_][\w'’-]*"
                   r"(?:\s+[^\W\d_a-zß-ÿ][\w'’-]*)?")  # "Mr smith", "Dr. Watson", "Ms. Maria Garcia"
TOKEN = re.compile(r"(?<![\w'’-])[^\W\d_][\w'’-]*")
WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][\w'’-]*")


@dataclass
class Verdict:
    text: str  # what may be spoken ("" when refused)
    refused: bool = False
    reason: str = ""  # why it was refused
    removed: dict[str, int] = field(default_factory=dict)  # kind -> how many were removed (never the text itself)

    @property
    def ok(self) -> bool:
        return not self.refused and bool(self.text)


class SafetyFilter:
    """`check(text) -> Verdict`. `banned_action`: "remove" drops a banned word, "refuse" refuses the line."""

    def __init__(self, allow_names=(), banned_words=(), banned_action: str = "remove", min_words: int = 2):
        if banned_action not in ("remove", "refuse"):
            raise ValueError(f"banned_action must be 'remove' or 'refuse', not {banned_action!r}")
        self.allow = {w.lower() for name in allow_names for w in WORD.findall(str(name))}
        self.banned = [b.strip().lower() for b in banned_words if b and b.strip()]
        self._banned_re = (re.compile(r"(?<!\w)(?:" + "|".join(re.escape(b) for b in sorted(self.banned, key=len,
                                                                                              reverse=True))
                                      + r")(?!\w)", re.I) if self.banned else None)
        self.banned_action = banned_action
        self.min_words = min_words

    def allow_name(self, name: str) -> None:
        self.allow.update(w.lower() for w in WORD.findall(str(name)))

    def check(self, text: str) -> Verdict:
        removed: Counter[str] = Counter()
        s = " ".join(str(text).split())

        def cut(pattern: re.Pattern, kind: str, s: str, keep=None) -> str:
            def sub(m: re.Match) -> str:
                if keep is not None and keep(m.group(0)):
                    return m.group(0)
                removed[kind] += 1
                return " \x00 "  # a hole: _tidy drops the words that pointed at it ("at", "call")
            return pattern.sub(sub, s)

        s = cut(SPELLED_EMAIL, "email", s)
        s = cut(EMAIL, "email", s)
        s = cut(URL, "url", s)
        s = cut(BARE_URL, "url", s)
        s = cut(HANDLE, "handle", s)
        s = cut(IP, "ip_address", s)
        s = cut(CARD, "card_number", s)
        s = cut(ADDRESS, "street_address", s)
        s = cut(POSTCODE, "postcode", s)
        s = cut(PHONE, "phone_number", s, keep=lambda m: len(re.sub(r"\W", "", m)) < 7 or bool(ISO_DATE.fullmatch(m)))
        if self._banned_re is not None:
            if self.banned_action == "refuse" and self._banned_re.search(s):
                return Verdict("", True, "banned word", {**removed, "banned_word": 1})
            s = cut(self._banned_re, "banned_word", s)
        s = TITLE.sub(lambda m: m.group(0) if self._allowed(m.group(0)) else (removed.update(["name"]) or "someone"),
                      s)
        s = self._names(s, removed)
        s = _tidy(s)
        if s and text.rstrip()[-1:] in ".!?" and s[-1] not in ".!?":
            s += text.rstrip()[-1]
        if removed and len(WORD.findall(s)) < self.min_words:
            return Verdict("", True, "nothing left to say after removing personal data", dict(removed))
        if not WORD.search(s):
            return Verdict("", True, "empty line", dict(removed))
        return Verdict(s, False, "", dict(removed))

    def _allowed(self, span: str) -> bool:
        words = [w for w in WORD.findall(span) if w.rstrip(".").lower() not in _TITLES]
        return bool(words) and all(w.lower() in self.allow for w in words)

    def _names(self, s: str, removed: Counter) -> str:
        """Capitalised runs (any script with capitals) that are names (see the module doc) and not allowed."""
        runs, cur = [], []
        for m in TOKEN.finditer(s):
            if m.group(0)[0].isupper() and cur and s[cur[-1].end():m.start()] == " ":
                cur.append(m)
                continue
            if cur:
                runs.append(cur)
            cur = [m] if m.group(0)[0].isupper() else []
        if cur:
            runs.append(cur)
        out, last = [], 0
        for run in runs:
            before = s[:run[0].start()].rstrip()
            sentence_start = not before or before[-1] in ".!?:;\"“(" or before.endswith("--")
            if sentence_start and run[0].group(0).lower().strip("'’") in _OPENERS:
                run = run[1:]  # a common word opening the sentence ("The", "Over"): judge the rest
                sentence_start = False
            words = [m.group(0) for m in run]
            if not words or all(self._not_a_name(w) for w in words):
                continue
            if len(words) == 1 and words[0].isupper() and len(words[0]) <= 3:
                continue  # an acronym (TV, BBC)
            out.append(s[last:run[0].start()])
            out.append("Someone" if sentence_start else "someone")
            last = run[-1].end()
            removed["name"] += 1
        out.append(s[last:])
        return "".join(out)

    def _not_a_name(self, word: str) -> bool:
        w = word.lower().strip("'’")
        return w in self.allow or w in _NOT_NAMES or (w.endswith(("'s", "’s")) and w[:-2] in self.allow)


_NOT_NAMES = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february",
              "march", "april", "may", "june", "july", "august", "september", "october", "november", "december",
              "i", "i'm", "i've", "i'll", "i'd"}
_TITLES = {"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "dame", "lord", "lady"}
# words that open a template's sentence; a capitalised run that starts with one is judged without it
_OPENERS = {"the", "a", "an", "over", "back", "on", "now", "here", "and", "but", "so", "then", "with", "in", "at",
            "from", "to", "for", "this", "that", "there", "it", "we", "they", "he", "she", "you", "i", "meanwhile",
            "applause", "question", "welcome", "breaking", "goal", "time", "call", "meet", "ask", "watch", "listen",
            "look", "write", "email", "visit", "text", "contact", "thanks", "thank", "please", "what", "who", "where",
            "when", "why", "how", "is", "are", "was", "has", "have", "do", "does", "did", "can", "will", "yes", "no",
            "today", "tonight", "tomorrow", "next", "first", "after", "before", "still", "says", "said", "tell",
            "people", "everyone", "someone", "somebody", "nobody", "one", "two", "three", "laughter", "music",
            "silence", "cheers", "crowd", "audience", "camera", "close", "wide", "stage", "quiet", "big", "great",
            "nice", "good", "well", "wow", "oh", "right", "okay", "ok", "let's", "lets", "all", "some", "more",
            "cut", "change", "switch", "live", "news", "sport", "sports", "weather", "later", "earlier", "again",
            "hello", "hi", "thanks", "goodbye", "bye", "up", "down", "out", "off", "into", "as", "if", "not", "our",
            "their", "his", "her", "my", "your", "its", "these", "those", "every", "each", "lots", "many", "few",
            "speaker", "speakers", "guest", "guests", "host", "panel", "room", "studio", "outside", "inside",
            "send", "give", "take", "bring", "see", "keep", "get", "go", "come", "make", "let", "try", "join",
            "follow", "stay", "wait", "hear", "read", "play", "show", "find", "number", "numbers", "score", "dial",
            "sign",
            "between", "during", "while", "because", "although", "since", "until", "once", "both", "either",
            "neither", "such", "very", "just", "only", "also", "even", "much", "most", "other", "another", "any"}


def _tidy(s: str) -> str:
    s = re.sub(r"\b(?:at|on|to|from|by|via|call|email|visit|of|number|is)(?:\s*[,;:])?\s*\x00", " ", s,
               flags=re.I)
    s = s.replace("\x00", " ")
    s = re.sub(r"\s+([,.!?;:])", r"\1", " ".join(s.split()))
    s = re.sub(r"[,;:]+\s*([.!?])", r"\1", s)
    s = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", s)  # ", ," left by a removal
    s = re.sub(r"(^|[.!?]\s*)[,;:]\s*", r"\1", s)
    s = re.sub(r"\s+([.!?])", r"\1", s).strip(" ,;:")
    s = re.sub(r"\b([Ss]omeone)(?:\s+someone)+\b", r"\1", s)  # "Ms. van der Berg" -> one someone
    s = re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), s)  # "someone joins" opens it
    return s
