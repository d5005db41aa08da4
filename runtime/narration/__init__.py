"""Narration: what the director says on air, and when.

    writer.py    events of a tick (keyword, scene read, cut) -> a line (templates, or a writer hook)
    safety.py    the filter every line passes before it leaves for a voice (PII, banned words)
    narrator.py  the per-tick narrator: rate limit, stale lines, placement in pauses of speech
    mix.py       narration into program sound (ducking), for files and live alike
The voices (Piper, ElevenLabs, the fallback adapter) are in runtime/tts.py.
"""

from .narrator import NarrationConfig, Narrator, Utterance
from .safety import SafetyFilter, Verdict

__all__ = ["NarrationConfig", "Narrator", "SafetyFilter", "Utterance", "Verdict"]
