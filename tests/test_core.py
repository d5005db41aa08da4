"""The one director core (ranker/core.py): contexts, scoring precision, rows, and replay of logged rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.extract import SCENE_FEATURES, scene_matrix
from features.observations import CameraObservation
from features.schema import TABLES
from ranker.baseline import WeightedBaselineRanker
from ranker.core import CameraTick, DirectorCore, policy_contexts, replay_logged
from ranker.policy import Override, PolicyConfig


class RowSink:
    """Collects rows exactly as the spool would store them (validated against the contract)."""

    def __init__(self):
        self.rows = {name: [] for name in TABLES}

    def append(self, table, row):
        self.rows[table].append(TABLES[table].validate(row))

    def frames(self):
        return {k: pd.DataFrame(v) for k, v in self.rows.items()}


def feats(**kw):
    x = np.full(len(SCENE_FEATURES), np.nan, np.float32)
    for k, v in kw.items():
        x[SCENE_FEATURES.index(k)] = v
    return x


def random_session(core, n=600, seed=3, cams="abcde"):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = k * core.tick_s
        speaker = "abcde"[(k // 40) % 5]
        ticks = []
        for c in cams:
            speaking = rng.random() < (0.8 if c == speaker else 0.4)  # crosstalk: the outgoing speaker goes on
            x = feats(speech_prob=rng.random() * (1.0 if c == speaker else 0.5),
                      audio_rel_db=0.0 if c == speaker else -rng.uniform(1, 12),
                      motion_energy=rng.random() * 0.3, people_count=int(rng.integers(0, 4)),
                      largest_face_area=rng.random() * 0.06, vlm_interest=float(rng.integers(1, 6)))
            ticks.append(CameraTick(c, x, speaking=speaking, safe_cut_wait_s=rng.random() * 0.3 if rng.random() < 0.3 else 0.0,
                                    quiet_at=t - rng.random() * core.tick_s if rng.random() < 0.5 else None,
                                    stale=bool(rng.random() < 0.01)))
        rng.shuffle(ticks)  # the caller's camera order must not matter
        ovs = []
        if k == 100:
            ovs = [Override("lock", "e", timeout_s=5.0, operator="ann")]
        if k == 300:
            ovs = [Override("take", "a", operator="bob")]
        out.append(core.tick(t + 1e-7 * rng.random(), ticks, ovs, ts=1_800_000_000 + t))
    return out


def cut_list(decisions):
    return [(d.cut_time, d.from_camera, d.to_camera, d.reason) for d in decisions if d.cut]


def test_replaying_the_logged_rows_reproduces_every_cut():
    sink = RowSink()
    core = DirectorCore("s1", policy=PolicyConfig(min_hold_s=1.0, cooldown_s=1.5, dwell_s=0.4), tick_s=0.2,
                        sink=sink)
    results = random_session(core)
    produced = [r.decision for r in results]
    assert len(cut_list(produced)) >= 10 and any(d.at is not None for d in produced if d.cut)
    f = sink.frames()
    assert len(f["overrides"]) == 2 and set(f["decisions"]["policy_config"]) == {core.config_json}
    from_scores = replay_logged(f["camera_ticks"], f["decisions"], f["overrides"])
    assert cut_list(from_scores) == cut_list(produced)
    assert [d.reason for d in from_scores] == [d.reason for d in produced]
    rescored = replay_logged(f["camera_ticks"], f["decisions"], f["overrides"], ranker=WeightedBaselineRanker())
    assert cut_list(rescored) == cut_list(produced)
    # without the operator's overrides the cut list differs: the replay really uses what was logged
    assert cut_list(replay_logged(f["camera_ticks"], f["decisions"])) != cut_list(produced)


def test_a_core_that_replays_scored_rows_needs_the_scores_and_never_logs():
    """`features=False` (ranker/evaluate.py's replays) skips rebuilding the ranker's features: it only works where
    every tick brings its scores, and a session that logs rows must build them."""
    with pytest.raises(ValueError, match="builds its ranker features"):
        DirectorCore("r", sink=RowSink(), features=False)
    core = DirectorCore("r", features=False)
    cams = [CameraTick("a", feats(speech_prob=0.9)), CameraTick("b", feats())]
    r = core.tick(0.0, cams, scores=np.array([0.9, 0.1]))
    assert r.decision.program == "a" and r.features == {}
    with pytest.raises(ValueError, match="give every tick its scores"):
        core.tick(0.2, cams)


def test_scores_are_used_in_the_precision_the_log_keeps():
    class Noisy:
        version = "noisy"

        def score(self, x):  # float64 scores whose float32 rounding changes a tie-break
            return np.array([0.5 + 1e-9, 0.5], dtype=np.float64)

        def explain(self, x_row, top=3):
            return []

    sink = RowSink()
    core = DirectorCore("s2", rankers=Noisy(), sink=sink)
    r = core.tick(0.0, [CameraTick("a", feats()), CameraTick("b", feats())])
    assert r.scores == {"a": 0.5, "b": 0.5}  # equal once rounded to Float32, as logged
    assert [row["score"] for row in sink.rows["camera_ticks"]] == [0.5, 0.5]


def test_missing_features_are_scored_and_logged_as_their_contract_default():
    x = feats(speech_prob=0.9)
    c = CameraTick("a", x)
    assert c.x[SCENE_FEATURES.index("people_count")] == 0.0
    assert c.x[SCENE_FEATURES.index("audio_dbfs")] == -120.0
    assert np.isnan(c.x[SCENE_FEATURES.index("vlm_interest")])  # nullable: stays unknown
    with pytest.raises(ValueError, match="unknown feature"):
        CameraTick.from_features("a", {"crowd_roar": 1.0})
    with pytest.raises(ValueError, match="not finite"):
        CameraTick.from_features("a", {"speech_prob": float("inf")})
    with pytest.raises(ValueError, match="count"):
        CameraTick.from_features("a", {"people_count": 2.5})
    with pytest.raises(ValueError, match="must be a number"):
        CameraTick.from_features("a", {"speech_prob": "loud"})
    for name, v in (("speech_prob", 42.0), ("audio_rel_db", 30.0), ("vlm_interest", 0.0), ("track_age_s", -1.0)):
        with pytest.raises(ValueError, match=f"feature {name} is .*outside its range"):  # the contract's bounds
            CameraTick.from_features("a", {name: v})
    assert CameraTick.from_features("a", {"speech_prob": 1.0, "audio_rel_db": 0.0, "vlm_interest": 5.0}).x is not None


def test_contexts_count_only_a_cameras_own_speech():
    speaker = CameraObservation("b", 5.0, audio_dbfs=-18.0, speaking=True, quiet_at=4.9)
    wide = CameraObservation("wide", 5.0, audio_dbfs=-28.0, speaking=True)  # hears b as bleed
    x = scene_matrix([speaker, wide])
    ctx = policy_contexts(5.0, [CameraTick.from_observation(o, r) for o, r in zip([speaker, wide], x)],
                          PolicyConfig())
    assert ctx["b"].speaking and not ctx["wide"].speaking and ctx["b"].quiet_at == 4.9
    loose = policy_contexts(5.0, [CameraTick.from_observation(o, r) for o, r in zip([speaker, wide], x)],
                            PolicyConfig(own_speech_db=12.0))
    assert loose["wide"].speaking  # the threshold is a policy setting, logged with the session


def test_a_ranker_returning_nan_never_wins_and_never_breaks_the_policy():
    class Broken:
        version = "nan"

        def score(self, x):
            return np.array([np.nan, 0.2])

        def explain(self, x_row, top=3):
            return []

    r = DirectorCore("s3", rankers=Broken()).tick(0.0, [CameraTick("a", feats()), CameraTick("b", feats())])
    assert r.decision.program == "b"


def test_non_finite_timing_is_refused_before_any_state_moves():
    core = DirectorCore("s4")
    with pytest.raises(ValueError, match="quiet_at"):
        CameraTick("a", feats(), quiet_at=float("nan"))
    with pytest.raises(ValueError, match="session clock"):
        core.tick(float("inf"), [CameraTick("a", feats())])
    assert core.tick(0.0, [CameraTick("a", feats())]).decision.reason == "start"


def _turns_session(core, words_on_a=()):
    """a talks until 4.6 s (by its VAD: its last word trails off softly), b from 5.2 s to 10 s with a clean pause
    at 7.6-8.0 s. `words_on_a`: what the ASR recognised on a's mic, reported a second after it was said."""
    out = []
    for k in range(1, 51):
        t = k * core.tick_s
        lo = t - core.tick_s
        talk_a = lo < 4.6 - 1e-9
        talk_b = 5.2 - 1e-9 <= lo and not 7.6 - 1e-9 <= lo < 8.0 - 1e-9
        cams = []
        for cid, talking in (("a", talk_a), ("b", talk_b), ("c", False)):
            x = feats(speech_prob=0.9 if talking else 0.0, audio_rel_db=0.0 if talking else -20.0,
                      largest_person_area=0.2, largest_face_area=0.05, people_count=1)
            words = tuple(w for w in words_on_a if cid == "a" and lo <= w[1] + 1.0 < t)
            cams.append(CameraTick(cid, x, speaking=talking, speech_mask=255 if talking else 0, words=words))
        out.append(core.tick(t, cams, ts=1_800_000_000 + t))
    return out


def test_a_recognised_word_vetoes_a_pause_the_vad_heard():
    cfg = PolicyConfig(lookahead_s=3.0)
    last_word = (4.45, 5.15)  # the ASR hears a's last word to its end; the VAD lost it at 4.6
    plain = [r.decision for r in _turns_session(DirectorCore("s", policy=cfg, tick_s=0.2))]
    cuts = [d for d in plain if d.cut and d.to_camera == "b"]
    assert cuts and last_word[0] < cuts[0].cut_time < last_word[1]  # VAD alone cuts into it: the test can fail
    sink = RowSink()
    heard = [r.decision for r in _turns_session(DirectorCore("s", policy=cfg, tick_s=0.2, sink=sink),
                                                words_on_a=[(3.9, 4.4), last_word])]
    cuts = [d for d in heard if d.cut and d.to_camera == "b"]
    assert cuts and not any(a <= cuts[0].cut_time <= b for a, b in [(3.9, 4.4), last_word]), cuts[0]
    f = sink.frames()
    logged = [list(s) for s in f["camera_ticks"]["asr_word_spans"] if len(s)]
    assert logged == [[3.9, 4.4], [4.45, 5.15]]
    assert cut_list(replay_logged(f["camera_ticks"], f["decisions"])) == cut_list(heard)


def test_word_times_are_validated():
    with pytest.raises(ValueError, match="start <= end"):
        CameraTick("a", feats(), words=((2.0, 1.0),))
    with pytest.raises(ValueError, match="finite"):
        CameraTick("a", feats(), words=((float("nan"), 1.0),))
    with pytest.raises(ValueError, match="pair"):
        CameraTick("a", feats(), words=((1.0,),))
