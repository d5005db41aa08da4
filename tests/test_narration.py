"""Narration: the safety filter, the voices and their fallback (the real ElevenLabs SDK against a local stand-in
with injected faults, and Piper), the narrator's scheduling, and `aiobs direct --narrate` on a session it was not
tuned on (lines only in pauses of the ground truth's words, mixed into program.mp4, markers in the OTIO)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from pydantic import SecretStr
import pytest

from features.observations import CameraObservation, VlmRead, Word
from ranker.policy import Decision
from runtime.narration import NarrationConfig, Narrator, SafetyFilter
from runtime.narration.mix import duck_gain, mix_into_program
from runtime.narration.writer import LineWriter
from runtime.settings import SettingsError, load_settings
from runtime.tts import ElevenLabsTTS, FallbackTTS, PiperTTS, Speech, TTSError
from tests.elevenlabs_standin import API_KEY, TONE_HZ, StandIn, tone

ROOT = Path(__file__).resolve().parent.parent
ALLOW = ["Speaker 1", "Speaker 2", "Wide", "Stage", "goal"]

# -- the safety filter -------------------------------------------------------------------------------------------------
CASES = [
    # (input, expected output or None when refused, kinds removed)
    ("Over to Speaker 2.", "Over to Speaker 2.", {}),
    ("Speaker 1 mentions goal.", "Speaker 1 mentions goal.", {}),
    ("Applause from the room.", "Applause from the room.", {}),
    ("On Stage, a rabbit wakes up in a meadow.", "On Stage, a rabbit wakes up in a meadow.", {}),
    ("The score is 3 to 2 in 2024.", "The score is 3 to 2 in 2024.", {}),
    ("The BBC reports rain.", "The BBC reports rain.", {}),
    ("Call John at 555-123-4567 now.", "Call someone now.", {"phone_number": 1, "name": 1}),
    ("Call +44 20 7946 0958.", None, {"phone_number": 1}),
    ("Write to bob.smith@example.com for tickets.", "Write for tickets.", {"email": 1}),
    ("The card 4111 1111 1111 1111 was read out.", "The card was read out.", {"card_number": 1}),
    ("The order 1234-5678-9012-3456 shipped.", "The order shipped.", {"card_number": 1}),  # card-like, Luhn or not
    ("Cards are red.", "Someone are red.", {"name": 1}),  # strict: an uncommon word opening a sentence is a name
    ("Speaker 2 talks to John Smith about goals.", "Speaker 2 talks to someone about goals.", {"name": 1}),
    ("Dr. Watson joins the panel.", "Someone joins the panel.", {"name": 1}),
    ("John said hi.", "Someone said hi.", {"name": 1}),  # a name opening a sentence alone
    ("Maria Garcia.", None, {"name": 1}),  # nothing left but "someone": refused
    ("She lives at 221B Baker Street.", "She lives.", {"street_address": 1}),
    ("Send it to 10 Downing St. today.", "Send it today.", {"street_address": 1}),
    ("Visit www.example.com today.", None, {"url": 1}),
    ("Numbers 12345 and 99 are fine.", "Numbers 12345 and 99 are fine.", {}),  # short numbers are not phones
    ("Damn, what a goal.", "What a goal.", {"banned_word": 1}),
    ("Over to Łukasz and Žofia Čapek.", "Over to someone and someone.", {"name": 2}),  # capitals of any script
    ("Over to JOHN.", "Over to someone.", {"name": 1}),  # a shouted name is not an acronym (TV, BBC are)
    ("Mr smith is here.", "Someone is here.", {"name": 1}),
    ("Text 1-800-FLOWERS now.", "Text now.", {"phone_number": 1}),  # a vanity number
    ("Dial +33 1 42 68 53 00 now.", "Dial now.", {"phone_number": 1}),
    ("Sign up at example.com/signup today.", "Sign up today.", {"url": 1}),
    ("Follow @janedoe for more.", "Follow for more.", {"handle": 1}),
    ("The server at 192.168.1.25 is down.", "The server is down.", {"ip_address": 1}),
    ("Write to jane at example dot com today.", "Write today.", {"email": 1}),
    ("The White House, DC 20500.", "The someone.", {"postcode": 1, "name": 1}),
    ("The final is on Monday 2026-05-12 in May.", "The final is on Monday 2026-05-12 in May.", {}),  # not a phone
    ("The new iPhone is out.", "The new iPhone is out.", {}),
    ("", None, {}),
]


@pytest.mark.parametrize("text,expected,removed", CASES)
def test_the_safety_filter_removes_or_refuses_personal_data(text, expected, removed):
    v = SafetyFilter(allow_names=ALLOW, banned_words=["damn"]).check(text)
    assert (v.text if v.ok else None) == expected
    assert v.removed == removed
    for secret in ("555", "bob.smith", "4111", "Watson", "John", "Garcia", "Baker", "example.com"):
        assert secret not in json.dumps(v.removed)  # what is logged never holds the personal data itself


def test_the_safety_filter_can_refuse_a_line_with_a_banned_word():
    f = SafetyFilter(allow_names=ALLOW, banned_words=["damn it"], banned_action="refuse")
    v = f.check("Damn it, Speaker 1 scores.")
    assert v.refused and v.reason == "banned word" and not v.text
    assert f.check("Speaker 1 scores.").ok
    with pytest.raises(ValueError):
        SafetyFilter(banned_action="shout")


# -- the voices -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def piper():
    return PiperTTS()


def _tone_share(x: np.ndarray, rate: int) -> float:
    """How much of x's energy is the stand-in's tone (1 = all of it)."""
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / rate)
    return float(spec[(f > TONE_HZ - 15) & (f < TONE_HZ + 15)].sum() / max(1e-12, spec.sum()))


def test_the_real_sdk_speaks_to_the_stand_in_with_key_voice_model_and_stream():
    with StandIn() as srv:
        el = ElevenLabsTTS(API_KEY, "voice-x", "eleven_flash_v2_5", srv.url, timeout_s=2.0)
        s = el.speak("Over to Speaker 2.")
        req = srv.requests[-1]
        assert req["path"] == "/v1/text-to-speech/voice-x/stream"
        assert req["query"]["output_format"] == ["pcm_16000"] and req["key"] == API_KEY
        assert req["body"]["text"] == "Over to Speaker 2." and req["body"]["model_id"] == "eleven_flash_v2_5"
        assert s.rate == 16000 and s.samples.size == tone("Over to Speaker 2.", 16000).size
        assert _tone_share(s.samples, s.rate) > 0.9
        with pytest.raises(TTSError, match="401"):
            ElevenLabsTTS("wrong", "v", "m", srv.url).speak("hi")
    with pytest.raises(TTSError, match="API key"):
        ElevenLabsTTS("", "v", "m", "http://127.0.0.1:9")


def test_piper_speaks_the_same_lines_the_same_way_in_every_run():
    """Piper's durations are random draws inside its ONNX graph: unseeded, a line's length varied ~3% run to run,
    and with it which pause a narration line fit (a files run narrated differently each time)."""
    lines = ["Over to Speaker 1, who has been waiting to answer.", "Speaker 2 takes the floor."]
    runs = [[PiperTTS().speak(text).samples for text in lines] for _ in range(2)]
    assert [a.size for a in runs[0]] == [b.size for b in runs[1]]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "stall"])
def test_a_failing_provider_hands_the_whole_line_to_the_next(fault, piper):
    with StandIn(hang_s=2.5) as srv:
        el = ElevenLabsTTS(API_KEY, "v", "m", srv.url, timeout_s=1.0)
        fb = FallbackTTS([el, piper], rate=16000, failures_to_open=3, probe_interval_s=60)
        try:
            srv.faults.append(fault)
            s = fb.speak("Over to Speaker 2.")
            assert s.provider == "piper"
            # whole from Piper: it does not open with the stand-in's tone (a stalled stream's first half is dropped)
            assert _tone_share(s.samples[:3200], 16000) < 0.5 and s.samples.size != tone("Over to Speaker 2.",
                                                                                         16000).size
            assert s.duration_s > 0.5
            assert fb.state["elevenlabs"].failures == 1 and fb.state["elevenlabs"].available
            s2 = fb.speak("Back to the room.")  # the next line: ElevenLabs again, whole
            assert s2.provider == "elevenlabs" and s2.samples.size == tone("Back to the room.", 16000).size
            assert fb.switches == 1
        finally:
            fb.close()


def test_the_breaker_opens_after_k_failures_and_a_probe_brings_the_provider_back(piper):
    with StandIn(hang_s=1.0) as srv:
        el = ElevenLabsTTS(API_KEY, "v", "m", srv.url, timeout_s=0.5)
        fb = FallbackTTS([el, piper], rate=24000, failures_to_open=2, probe_interval_s=0.3)
        try:
            srv.default = "429"
            assert [fb.speak(f"Line {i}.").provider for i in range(2)] == ["piper", "piper"]
            assert not fb.state["elevenlabs"].available and fb.state["elevenlabs"].opened == 1
            n = len(srv.requests)
            s = fb.speak("While it is open.")
            assert s.provider == "piper" and s.rate == 24000  # resampled to the one rate
            time.sleep(0.1)
            assert len([r for r in srv.requests[n:] if r["body"].get("text") != "Check."]) == 0  # not even asked
            srv.default = "ok"  # it recovers: the background probe notices
            deadline = time.monotonic() + 5
            while not fb.state["elevenlabs"].available and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fb.state["elevenlabs"].available and fb.state["elevenlabs"].recovered == 1
            s = fb.speak("Back again.")
            assert s.provider == "elevenlabs" and s.rate == 24000
            assert s.samples.size == pytest.approx(tone("Back again.", 16000).size * 1.5, abs=2)
            assert fb.status()["elevenlabs"]["opened"] == 1
        finally:
            fb.close()


def test_when_every_provider_fails_the_line_fails_clearly():
    class Broken:
        name = "broken"

        def speak(self, text):
            raise RuntimeError("no voice today")

    fb = FallbackTTS([Broken()], rate=16000, failures_to_open=1, probe_interval_s=60)
    with pytest.raises(TTSError, match="no voice today"):
        fb.speak("Hello.")
    with pytest.raises(TTSError):  # open breakers: every provider is still tried rather than none
        fb.speak("Hello again.")
    fb.close()


# -- the narrator's scheduling ----------------------------------------------------------------------------------------
class FixedVoice:
    name = "fixed"

    def __init__(self, seconds=0.8, rate=16000):
        self.seconds, self.rate, self.calls = seconds, rate, []

    def speak(self, text):
        self.calls.append(text)
        return Speech(np.full(int(self.seconds * self.rate), 0.1, np.float32), self.rate, self.name, 0.01, 0.01)


def _mask(t: float, tick_s: float, speech: list[tuple[float, float]]) -> int:
    m, w = 0, tick_s / 8
    for b in range(8):
        a = t - tick_s + b * w
        if any(s < a + w and e > a for s, e in speech):
            m |= 1 << b
    return m


def _run(narrator, speech, events, duration, tick_s=0.2, names=("cam1", "cam2")):
    """Tick a narrator over synthetic speech [(start, end)] and cut events {tick time: (from, to, reason)}."""
    program = names[0]
    for k in range(1, int(duration / tick_s) + 1):
        t = round(k * tick_s, 6)
        m = _mask(t, tick_s, speech)
        obs = [CameraObservation(camera_id=c, t=t, speech_mask=m if c == names[0] else 0,
                                 speaking=bool(m >> 6)) for c in names]
        cut = events.get(round(t, 3))
        d = Decision(t, cut[1] if cut else program, bool(cut), cut[0] if cut else "", cut[1] if cut else "",
                     cut[2] if cut else "hold")
        if cut:
            program = cut[1]
        narrator.tick(t, obs, SimpleNamespace(decision=d))
    return narrator


def _overlap(lines, speech, margin=0.0) -> float:
    return sum(max(0.0, min(u.end + margin, e) - max(u.start - margin, s)) for u in lines for s, e in speech)


def test_lines_go_into_pauses_they_heard_whole_at_most_one_per_interval():
    # talk with short pauses, and long pauses at 10-12 s and 30-33 s; cuts every few seconds
    speech = [(0.5, 4.0), (4.4, 9.8), (12.1, 18.0), (18.3, 29.9), (33.0, 40.0)]
    cuts = {round(t, 3): ("cam1", "cam2", "turn") if i % 2 == 0 else ("cam2", "cam1", "turn")
            for i, t in enumerate([4.2, 10.2, 18.2, 30.4, 36.0])}
    cfg = NarrationConfig(interval_s=15.0, max_age_s=8.0, margin_s=0.2, lookback_s=4.0)
    n = _run(Narrator(cfg, FixedVoice(0.8), names={"cam1": "Speaker 1", "cam2": "Speaker 2"}, tick_s=0.2),
             speech, cuts, 40.0)
    assert len(n.lines) == 2, n.stats
    assert _overlap(n.lines, speech, margin=0.19) == 0  # never over speech, with the margin kept
    assert all(u.verified for u in n.lines)
    assert n.lines[1].start - n.lines[0].start >= 15.0  # rate limit, start to start
    # the line voiced for the cut at 4.2 s found no pause; the fresher cut at 10.2 s took its slot (same kind,
    # waited over half its life), and the one at 18.2 s gave way to 30.4 s: both are logged as replaced
    assert n.stats["replaced"] == 2 and n.stats["lines"] == 2 and [u.event_t for u in n.lines] == [10.2, 30.4]
    assert "Speaker 1" in n.lines[0].text and "Speaker 1" in n.lines[1].text
    # a line about a cut may lead it in the pause before it
    assert 9.8 + 0.2 <= n.lines[0].start < 10.2 and 29.9 + 0.2 <= n.lines[1].start < 30.4


def test_continuous_speech_means_no_narration_and_stale_lines_are_dropped():
    speech = [(0.0, 60.0)]
    n = _run(Narrator(NarrationConfig(lookback_s=4.0), FixedVoice(), names={}, tick_s=0.2), speech,
             {5.0: ("cam1", "cam2", "turn"), 30.0: ("cam2", "cam1", "delta")}, 60.0)
    assert n.lines == [] and n.stats["stale"] == 2


def test_live_without_a_delay_starts_after_a_short_pause_and_ducks():
    speech = [(0.0, 5.0), (6.5, 12.0)]
    cfg = NarrationConfig(interval_s=10.0, margin_s=0.2, min_pause_s=0.5, lookback_s=0.0)
    n = _run(Narrator(cfg, FixedVoice(1.2), names={}, tick_s=0.2), speech, {4.0: ("cam1", "cam2", "turn")}, 12.0)
    (u,) = n.lines
    assert not u.verified and 5.5 <= u.start <= 5.8  # 0.5 s into the pause, started before the pause's end was known
    g = duck_gain(int(u.start * 16000), int(1.2 * 16000), 16000, n.lines, -14.0)
    assert g is not None and np.allclose(g[2000:-2000], 10 ** (-14 / 20), atol=1e-3)  # the program ducks under it


def test_events_keywords_and_scene_reads_outrank_cuts_and_the_writer_hook_is_filtered(monkeypatch, tmp_path):
    (tmp_path / "llm_writer.py").write_text(
        "def write(kind, fields):\n"
        "    if kind == 'keyword':\n"
        "        return f\"{fields['speaker']} said {fields['keyword']}; call Jane Doe on 555 010 9999.\"\n"
        "    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    writer = LineWriter(hook="llm_writer:write")
    cfg = NarrationConfig(interval_s=5.0, lookback_s=4.0)
    n = Narrator(cfg, FixedVoice(0.5), names={"cam1": "Speaker 1", "cam2": "Wide"}, keywords=["goal"], tick_s=0.2,
                 writer=writer, safety=SafetyFilter(allow_names=["Speaker 1", "Wide", "goal"]))
    t = 1.0
    words = (Word(0.6, 0.9, "goal!"),)
    obs = [CameraObservation(camera_id="cam1", t=t, keyword_hits=1, new_words=words),
           CameraObservation(camera_id="cam2", t=t, vlm=VlmRead(t=0.9, interest=4, activity="People ride bikes"))]
    d = Decision(t, "cam2", True, "cam1", "cam2", "delta")
    for k in range(5, 30):
        n.tick(k / 5, obs if k == 5 else [CameraObservation(camera_id="cam1", t=k / 5)],
               SimpleNamespace(decision=d if k == 5 else Decision(k / 5, "cam2", False, "", "", "hold")))
    assert n.stats["events"] == 3 and n.stats["superseded"] == 1 and n.stats["skipped"] == 1  # keyword > cut > scene
    (u,) = n.lines
    assert u.event == "keyword" and u.text == "Speaker 1 said goal; call someone." and u.removed == {
        "name": 1, "phone_number": 1}
    assert n.removed == {"name": 1, "phone_number": 1}
    with pytest.raises(ValueError, match="module:function"):
        LineWriter(hook="no_colon")


def test_mixing_ducks_the_program_and_adds_the_line():
    rate = 16000
    prog = np.full(rate * 3, 0.5, np.float32)
    u = SimpleNamespace(start=1.0, samples=np.full(rate // 2, 0.2, np.float32))
    out = mix_into_program(prog, 0, rate, [u], -20.0)
    assert out[:rate - 2000] == pytest.approx(0.5)  # before the ramp: untouched
    assert out[rate + 4000:rate + 6000] == pytest.approx(0.05 + 0.2)  # under the line: ducked program + the line
    assert out[2 * rate:] == pytest.approx(0.5)  # after the ramp: back up
    assert np.abs(np.diff(out)).max() < 0.21  # no click beyond the line's own edge


def test_doctor_reports_the_voices_that_exist(data_dir):
    from runtime.doctor import check_tts

    assert check_tts(load_settings(env={}, data_dir=data_dir))[0] == "ok"
    with StandIn() as srv:
        good = load_settings(env={}, data_dir=data_dir, tts_backend="elevenlabs", elevenlabs_api_key=API_KEY,
                             elevenlabs_base_url=srv.url)
        status, detail = check_tts(good)
        assert status == "ok" and srv.url in detail and "fallback Piper" in detail
        assert srv.requests[-1]["path"] == "/v1/models"
        status, detail = check_tts(good.model_copy(update={"elevenlabs_api_key": SecretStr("wrong")}))
        assert status == "warn" and "rejects the API key (HTTP 401)" in detail and "falls back" in detail
    status, detail = check_tts(load_settings(env={}, data_dir=data_dir, narration_writer="no_such_module:write"))
    assert status == "FAIL" and "cannot be loaded" in detail
    status, detail = check_tts(load_settings(env={}, data_dir=data_dir, tts_backend="elevenlabs"))
    assert status == "warn" and "no elevenlabs_api_key" in detail


def test_narration_settings_validate():
    s = load_settings(env={"AIOBS_TTS_BACKEND": "elevenlabs", "AIOBS_NARRATION_BANNED_WORDS": "damn, heck",
                           "AIOBS_NARRATION_TEMPLATES": '{"turn": ["Now {to}."]}'})
    assert s.narration_banned_words == ["damn", "heck"] and s.narration_templates == {"turn": ["Now {to}."]}
    for env in ({"AIOBS_NARRATION_TEMPLATES": "{not json"}, {"AIOBS_TTS_BACKEND": "festival"},
                {"AIOBS_NARRATION_TEMPLATES": '{"turn": ["Over to {nope}."]}'},  # a field no event has
                {"AIOBS_NARRATION_TEMPLATES": '{"trun": ["Over to {to}."]}'},  # an event type that never happens
                {"AIOBS_NARRATION_WRITER": "nocolon"},
                {"AIOBS_ELEVENLABS_BASE_URL": "ftp://x"}, {"AIOBS_NARRATION_INTERVAL_S": "0"}):
        with pytest.raises(SettingsError):
            load_settings(env=env)


# -- aiobs direct --narrate, end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def narrated(tmp_path_factory):
    """A conversation unlike the sample's (2 speakers, shorter turns, another seed), directed with ElevenLabs (the
    local stand-in, which fails every line that names Speaker 1) falling back to Piper."""
    from runtime.sample import SessionSpec, build_conversation

    d = tmp_path_factory.mktemp("narrated")
    gt = build_conversation(d / "media", SessionSpec(speakers=2, duration_s=45.0, seed=11, sentences_per_turn=(1, 2),
                                                     backchannel_p=0.2))
    with StandIn() as srv:
        srv.fail_if = lambda text: "500" if "Speaker 1" in text else None
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOBS_")}
        env.update(AIOBS_DATA_DIR=str(d / "data"), AIOBS_TTS_BACKEND="elevenlabs", AIOBS_ELEVENLABS_API_KEY=API_KEY,
                   AIOBS_ELEVENLABS_BASE_URL=srv.url, AIOBS_NARRATION_INTERVAL_S="8",
                   AIOBS_NARRATION_BANNED_WORDS="heck", AIOBS_TTS_FAILURES_TO_OPEN="50")  # breakers: unit tests
        out = d / "program"
        p = subprocess.run([sys.executable, "-m", "runtime.cli", "direct", *sorted(map(str, (d / "media").glob(
            "cam*.mp4"))), "--truth", str(gt), "--out", str(out), "--narrate"], env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        requests = list(srv.requests)
    return out, json.loads(gt.read_text()), json.loads((out / "report.json").read_text()), p.stdout, requests


def test_direct_narrate_speaks_only_in_pauses_at_most_once_per_interval(narrated):
    out, gt, report, stdout, requests = narrated
    n = report["narration"]
    lines = n["lines"]
    assert len(lines) >= 2, (n["stats"], stdout)
    assert "narration:" in stdout
    words = [(w[0], w[1]) for line in gt["speech"] for w in line["words"]]
    overlap = sum(max(0.0, min(u["end"], e) - max(u["start"], s)) for u in lines for s, e in words)
    assert overlap == 0.0, [u for u in lines if any(min(u["end"], e) > max(u["start"], s) for s, e in words)]
    starts = [u["start"] for u in lines]
    assert all(b - a >= 8.0 - 1e-6 for a, b in zip(starts, starts[1:]))
    assert all(0 <= u["start"] and u["end"] <= report["duration_s"] for u in lines)
    # the stand-in fails every line about Speaker 1: those came whole from Piper, the others from ElevenLabs
    assert [u["provider"] for u in lines] == ["piper" if "Speaker 1" in u["text"] else "elevenlabs" for u in lines]
    assert {u["provider"] for u in lines} == {"piper", "elevenlabs"}, lines
    assert any(r["fault"] == "500" for r in requests) and all(r["key"] == API_KEY for r in requests)
    assert n["tts"]["elevenlabs"]["available"] and n["tts"]["elevenlabs"]["last_error"] == "elevenlabs: HTTP 500"
    # every line's outcome is in the feature log: aired ones with their times and voice, the rest with why not
    from features.store import FeatureStore

    with FeatureStore(f"chdb://{out.parent / 'data' / 'clickhouse'}") as store:
        rows = store.frame("narration", sessions=[report["session_id"]])
    aired = rows[rows["outcome"] == "aired"].sort_values("start_s")
    assert list(aired["text"]) == [u["text"] for u in lines]
    assert list(aired["provider"]) == [u["provider"] for u in lines]
    assert np.allclose(aired["start_s"], [u["start"] for u in lines], atol=1e-3)
    assert set(rows["outcome"]) <= {"aired", "stale", "refused", "tts_failed", "unwritten", "replaced"}
    assert len(rows) == n["stats"].get("lines", 0) + sum(n["stats"].get(k, 0) for k in (
        "stale", "refused", "tts_failed", "unwritten", "replaced"))


def test_direct_narrate_mixes_the_lines_into_program_mp4_and_marks_them_in_the_otio(narrated):
    import opentimelineio as otio

    from runtime.media import SAMPLE_RATE, read_audio

    out, gt, report, _, _ = narrated
    lines = report["narration"]["lines"]
    audio = read_audio(out / "program.mp4")
    for u in lines:
        seg = audio[int(u["start"] * SAMPLE_RATE) + 800:int(u["end"] * SAMPLE_RATE) - 800]
        if u["provider"] == "elevenlabs":  # the stand-in's tone is on the program, over the ducked room
            assert _tone_share(seg, SAMPLE_RATE) > 0.5
        assert np.sqrt(np.mean(seg ** 2)) > 0.02  # and audible
    tl = otio.adapters.read_from_file(str(out / "cuts.otio"))
    marks = [m for m in tl.tracks[0].markers]
    assert [m.name for m in marks] == [u["text"] for u in lines]
    for m, u in zip(marks, lines):
        rate = m.marked_range.start_time.rate
        assert abs(m.marked_range.start_time.to_seconds() - u["start"]) <= 0.5 / rate + 1e-9
        assert abs(m.marked_range.end_time_exclusive().to_seconds() - u["end"]) <= 1.5 / rate + 1e-9
    html = (out / "report.html").read_text()
    assert "<h2>Narration</h2>" in html and lines[0]["text"] in html


def test_a_name_opening_the_vlm_read_never_reaches_the_voice():
    voice = FixedVoice(0.5)
    n = Narrator(NarrationConfig(interval_s=5.0, lookback_s=4.0), voice, names={"cam2": "Stage"}, tick_s=0.2)
    for k in range(1, 30):
        t = k / 5
        vlm = VlmRead(t=0.1, interest=4, activity="John Smith waves at the camera") if k == 1 else None
        n.tick(t, [CameraObservation(camera_id="cam2", t=t, vlm=vlm)],
               SimpleNamespace(decision=Decision(t, "cam2", False, "", "", "hold")))
    assert voice.calls == ["On Stage, someone waves at the camera."], voice.calls
    assert n.lines[0].removed == {"name": 1}
