"""Temporal context features (features/temporal.py): their meaning on scripted ticks, and that they are computed once:
the core logs them, a replay and the simulator's/importer's path recompute exactly them, and no program state enters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.extract import RANKER_FEATURES, SCENE_FEATURES, TEMPORAL_FEATURES
from features.temporal import HORIZON_S, TemporalState, temporal_columns
from ranker.core import CameraTick, DirectorCore, replay_logged
from ranker.dataset import scene_part
from ranker.policy import Override

from .test_core import RowSink, feats

TI = {n: i for i, n in enumerate(TEMPORAL_FEATURES)}


def scripted(k, tick_s=0.2):
    """cam a talks 0-4 s, cam b 5-8 s (a keyword at 6 s), then silence; cam c's motion jumps at 10 s."""
    t = k * tick_s
    out = []
    for c in "abc":
        talking = (c == "a" and t < 4.0) or (c == "b" and 5.0 <= t < 8.0)
        out.append(CameraTick(c, feats(speech_prob=0.9 if talking else 0.05, audio_rel_db=0.0 if talking else -20.0,
                                       largest_person_area=0.3, people_count=1,
                                       keyword_hits=1 if c == "b" and abs(t - 6.0) < 1e-9 else 0,
                                       motion_energy=0.5 if c == "c" and t >= 10.0 else 0.02),
                              speaking=talking, speech_mask=0xFF if talking else 0))
    return t, out


def run(ticks=75, tick_s=0.2, sink=None):
    core = DirectorCore("temporal", tick_s=tick_s, sink=sink)
    return [core.tick(*scripted(k, tick_s), ts=1_800_000_000 + k * tick_s) for k in range(ticks)]


def at(results, t, cam, name, tick_s=0.2):
    r = results[int(round(t / tick_s))]
    return float(r.features[cam][len(SCENE_FEATURES) + TI[name]])


def test_temporal_features_say_what_happened_over_the_last_seconds():
    r = run()
    assert at(r, 3.0, "a", "speech_run_s") == pytest.approx(3.2, abs=0.05)  # 0 .. 3.2 s, to the end of the tick
    assert at(r, 3.0, "a", "since_spoke_s") == 0.0 and at(r, 3.0, "b", "since_spoke_s") == HORIZON_S
    assert at(r, 4.6, "a", "speech_run_s") == 0.0 and at(r, 4.6, "a", "since_spoke_s") == pytest.approx(0.8, abs=0.01)
    assert at(r, 4.6, "c", "since_anyone_spoke_s") == pytest.approx(0.8, abs=0.01)  # (last voiced tick: 3.6-3.8 s)
    assert at(r, 2.0, "a", "floor_holder") == 1.0 and at(r, 2.0, "b", "floor_holder") == 0.0
    assert at(r, 2.0, "a", "floor_s") == pytest.approx(1.0, abs=0.25)  # the floor passed after ~1 s of speech
    assert at(r, 7.0, "b", "floor_holder") == 1.0 and at(r, 7.0, "a", "floor_holder") == 0.0
    assert at(r, 7.0, "b", "since_keyword_s") == pytest.approx(1.0, abs=0.01)
    assert at(r, 7.0, "a", "since_keyword_s") == HORIZON_S and at(r, 7.0, "a", "since_keyword_any_s") == \
        pytest.approx(1.0, abs=0.01)
    assert at(r, 3.8, "a", "speech_share_5s") > 0.5 > at(r, 3.8, "b", "speech_share_5s") == 0.0
    assert at(r, 10.6, "c", "motion_trend") > 0.1 and at(r, 14.8, "c", "motion_mean_2s") > 0.4
    assert at(r, 9.8, "c", "motion_mean_2s") == pytest.approx(0.02, abs=1e-6)
    # the settled speaker: a stays it while b has the floor but has not talked 3 s yet (a patient director's shot)
    assert at(r, 7.0, "b", "floor_holder") == 1.0 and at(r, 7.0, "a", "settled_speaker") == 1.0
    assert at(r, 7.0, "b", "settled_speaker") == 0.0 and at(r, 7.0, "a", "settled_s") == pytest.approx(4.2, abs=0.01)
    assert at(r, 9.0, "b", "settled_speaker") == 1.0 and at(r, 9.0, "a", "settled_speaker") == 0.0
    assert at(r, 9.0, "a", "settled_s") == 0.0 and at(r, 9.0, "b", "settled_s") == pytest.approx(1.2, abs=0.01)
    assert at(r, 7.0, "a", "last_utterance_s") == pytest.approx(4.0, abs=0.01)  # its last one, ended at 3.8 s
    assert at(r, 7.0, "b", "last_utterance_s") == pytest.approx(2.2, abs=0.01)  # the current one
    assert at(r, 12.0, "c", "last_utterance_s") == 0.0  # never heard


def test_the_features_do_not_depend_on_the_tick_rate():
    """5 Hz and 10 Hz agree to within a tick (times) or a few hundredths (means)."""
    slow, fast = run(75, 0.2), run(150, 0.1)
    for name, tol in (("motion_mean_2s", 0.03), ("motion_trend", 0.03), ("speech_share_5s", 0.05),
                      ("since_spoke_s", 0.11), ("speech_run_s", 0.11), ("last_utterance_s", 0.11),
                      ("settled_s", 0.11)):
        for t in (3.0, 6.0, 12.0, 14.0):
            cam = "c" if "motion" in name else "a"
            assert at(slow, t, cam, name, 0.2) == pytest.approx(at(fast, t, cam, name, 0.1), abs=tol), (name, t)


def test_logged_temporal_features_are_recomputed_exactly_by_every_path():
    """The core logs them; the simulator's/importer's frame path and a re-scoring replay compute the same values."""
    sink = RowSink()
    core = DirectorCore("temporal", tick_s=0.2, sink=sink)
    from .test_core import random_session

    random_session(core, n=300)
    rows = sink.frames()
    ticks = rows["camera_ticks"]
    assert ticks[list(TEMPORAL_FEATURES)].notna().all().all()
    again = temporal_columns(ticks.sample(frac=1.0, random_state=0), tick_s=0.2)  # any row order
    pd.testing.assert_frame_equal(again.loc[ticks.index].astype(np.float32),
                                  ticks[list(TEMPORAL_FEATURES)].astype(np.float32), check_exact=True)


class SpeechRunRanker:
    """Scores a camera by how long it has been talking: a ranker only temporal context can drive."""

    version = "speech-run"

    def score(self, x):
        x = np.atleast_2d(x)
        return x[:, RANKER_FEATURES.index("speech_run_s")] / 10.0 + x[:, RANKER_FEATURES.index("floor_holder")]

    def explain(self, x_row, top=3):
        return [("speech_run_s", float(x_row[RANKER_FEATURES.index("speech_run_s")]))]


def test_a_temporal_ranker_is_replayed_exactly_from_the_logged_rows():
    sink = RowSink()
    core = DirectorCore("temporal", tick_s=0.2, sink=sink, rankers=SpeechRunRanker())
    from .test_core import random_session

    live = [r.decision for r in random_session(core, n=400)]
    f = sink.frames()
    assert sum(d.cut for d in live) >= 3
    for ranker in (None, SpeechRunRanker()):  # the logged scores, and the logged features re-scored
        again = replay_logged(f["camera_ticks"], f["decisions"], f["overrides"], ranker=ranker)
        assert [(d.program, d.cut, d.reason, d.at) for d in again] == [(d.program, d.cut, d.reason, d.at) for d in live]


def test_the_real_media_replay_scores_a_session_at_once_and_directs_as_the_core_does_tick_by_tick():
    """ranker/evaluate.py `real_program` (the gate's and the tuning's real-media replay) computes a session's temporal
    features once and scores all its rows at once: the features are the ones the core logged, and the program is the
    one the core makes scoring every tick itself."""
    from ranker.core import policy_from_log
    from ranker.evaluate import real_program
    from runtime.realset import RealSession

    from .test_core import random_session

    sink = RowSink()
    core = DirectorCore("temporal-real", tick_s=0.2, sink=sink, rankers=SpeechRunRanker())
    random_session(core, n=400)
    f = sink.frames()
    session = RealSession("temporal-real", f["camera_ticks"], [], 80.0, 0.2)
    logged = f["camera_ticks"].sort_values(["tick", "camera_id"])[list(RANKER_FEATURES)]
    once = np.concatenate(session.ranker_rows)
    np.testing.assert_array_equal(once, logged.to_numpy(np.float32, na_value=np.nan))
    config = policy_from_log(f["decisions"]["policy_config"].iloc[0])[0]
    per_tick = replay_logged(f["camera_ticks"], f["decisions"], ranker=SpeechRunRanker())  # no overrides: none here
    at_once = real_program(SpeechRunRanker(), session, config)
    assert sum(d.cut for d in at_once) >= 3
    assert [(d.program, d.cut, d.reason, d.at) for d in at_once] == [(d.program, d.cut, d.reason, d.at)
                                                                      for d in per_tick]


def test_no_program_state_enters_the_temporal_features():
    """The same scene, directed differently (operator takes), gives the same temporal features."""
    def session(takes):
        sink = RowSink()
        core = DirectorCore("temporal", tick_s=0.2, sink=sink)
        for k in range(60):
            t, cams = scripted(k)
            core.tick(t, cams, [Override("take", takes[k], operator="op")] if k in takes else [], ts=1e9 + t)
        return sink.frames()["camera_ticks"]

    a, b = session({5: "c", 30: "b"}), session({3: "b", 20: "a", 40: "c"})
    assert (a["on_program"] != b["on_program"]).any()
    pd.testing.assert_frame_equal(a[list(TEMPORAL_FEATURES)], b[list(TEMPORAL_FEATURES)])


def test_a_camera_that_joins_late_starts_fresh_and_a_repeated_clock_moves_nothing():
    st = TemporalState()
    x = np.stack([feats(motion_energy=0.1, people_count=2), feats(motion_energy=0.3)]).astype(np.float32)
    x = np.where(np.isnan(x), 0, x)
    first = st.update(0.0, 0.2, ["a"], x[:1], [0], [False], [False])
    assert first[0, TI["since_spoke_s"]] == HORIZON_S and first[0, TI["motion_mean_2s"]] == np.float32(0.1)
    both = st.update(0.2, 0.2, ["a", "b"], x, [0, 0], [False, False], [False, False])
    assert both[1, TI["motion_mean_2s"]] == np.float32(0.3) and both[1, TI["people_mean_2s"]] == 0.0
    same = st.update(0.2, 0.2, ["a", "b"], x, [0, 0], [False, False], [False, False])  # the same t again
    np.testing.assert_array_equal(same, both)


def test_temporal_features_are_computed_not_accepted_from_outside():
    with pytest.raises(ValueError, match="temporal context features"):
        CameraTick.from_features("a", {"speech_prob": 0.5, "speech_run_s": 3.0})
    assert scene_part(np.zeros(len(RANKER_FEATURES))).shape == (len(SCENE_FEATURES),)


def test_a_speaker_who_talks_in_sentences_settles_after_3_s_of_their_turn():
    """Sentences of 1.6 s with 0.8 s pauses (each its own utterance: the VAD's gap is 0.5 s) are one turn: the
    speaker settles 3 s into it, not after a 3 s sentence that never comes (helper trial: a speaker of the sample
    settled 6 s late); a pause over 1 s starts a new turn."""
    def tick(k, tick_s=0.2):
        t = k * tick_s
        a = t < 3.0  # a talks 0-3 s: settled at 3 s
        b = 4.0 <= t < 14.0 and (t - 4.0 + 1e-9) % 2.4 < 1.6  # b: sentences from 4 s, pauses 0.8 s
        ticks = []
        for c, on in (("a", a), ("b", b)):
            ticks.append(CameraTick(c, feats(speech_prob=0.9 if on else 0.05, audio_rel_db=0.0 if on else -20.0,
                                             largest_person_area=0.3, people_count=1),
                                    speaking=on, speech_mask=0xFF if on else 0))
        return t, ticks

    core = DirectorCore("sentences", tick_s=0.2)
    r = [core.tick(*tick(k)) for k in range(80)]
    assert at(r, 5.4, "b", "speech_run_s") == pytest.approx(1.6, abs=0.01)
    assert at(r, 6.0, "b", "speech_run_s") == 0.0  # between two sentences
    assert at(r, 6.0, "b", "last_utterance_s") == pytest.approx(1.6, abs=0.01)
    assert at(r, 6.6, "a", "settled_speaker") == 1.0 and at(r, 6.6, "b", "settled_speaker") == 0.0
    assert at(r, 6.8, "b", "settled_speaker") == 1.0 and at(r, 6.8, "a", "settled_speaker") == 0.0  # 3 s into it
    assert at(r, 7.4, "b", "settled_s") == pytest.approx(0.6, abs=0.01)
    assert at(r, 7.4, "b", "speech_run_s") < 3.0 > at(r, 10.0, "b", "last_utterance_s")  # no 3 s sentence


@pytest.mark.parametrize("tick_s", [0.2, 1 / 15, 0.25])
def test_speech_runs_keep_a_run_through_a_silence_of_exactly_the_gap_at_any_tick_rate(tick_s):
    """One run tracker for the utterances and the settled speaker's turns: a silence of exactly the gap keeps the
    run (the floats of the bin grid round either way), one bin more starts a new one; numpy masks work as ints."""
    from features.conversation import MASK_BINS, TIME_EPS_S, SpeechRuns

    w = tick_s / MASK_BINS
    for gap_bins in (8, 40):  # a gap of one tick, of five
        gap = gap_bins * w
        for extra, same in ((0, True), (1, False)):
            runs = SpeechRuns(gap, tolerance_s=TIME_EPS_S)
            runs.add(5 * tick_s, tick_s, "a", np.int64(0xFF))  # speech over tick 5, then silence
            silent = gap_bins + extra  # bins of silence, then speech from a bin boundary
            k, b = 5 + 1 + silent // MASK_BINS, silent % MASK_BINS
            assert runs.talking("a", 5 * tick_s + gap) and not runs.talking("a", 5 * tick_s + gap + w)
            runs.add(k * tick_s, tick_s, "a", np.int64((0xFF << b) & 0xFF))
            assert (runs.get("a").start == pytest.approx(4 * tick_s)) is same, (tick_s, gap_bins, extra)
    quiet = SpeechRuns(1.0)
    quiet.add(1.0, 0.2, "a", 0)
    assert quiet.get("a") is None and quiet.length("a", 1.0) == 0.0 and quiet.last_speech() is None
