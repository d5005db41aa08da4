"""Every switching rule, on hand-built score sequences (the policy is pure: no models needed)."""

from __future__ import annotations

import json

import pytest

from ranker.policy import CameraContext, Override, PolicyConfig, SwitchingPolicy

DT = 0.2  # 5 Hz ticks
NO_COOLDOWN = dict(cooldown_s=0.0, pingpong_window_s=0.0, dwell_s=0.0)


def run(policy, seq, t0=0.0, ctx=None, overrides=None):
    """seq: list of score dicts, one per tick. Returns decisions."""
    out = []
    for k, scores in enumerate(seq):
        t = t0 + k * DT
        out.append(policy.step(t, scores, (ctx or {}).get(k), (overrides or {}).get(k, ())))
    return out


def cuts(decisions):
    return [(round(d.t, 1), d.from_camera, d.to_camera, d.reason) for d in decisions if d.cut]


def test_start_cuts_to_the_best_camera_and_states_why():
    d = SwitchingPolicy().step(0.0, {"a": 0.2, "b": 0.7})
    assert d.cut and d.program == "b" and d.reason == "start" and d.transition == "cut"
    assert json.loads(d.state)["program"] == "b"


def test_minimum_hold():
    p = SwitchingPolicy(PolicyConfig(min_hold_s=2.0, opening_hold_s=2.0, **NO_COOLDOWN))
    ds = run(p, [{"a": 0.9, "b": 0.1}] + [{"a": 0.1, "b": 0.9}] * 15)
    assert cuts(ds) == [(0.0, "", "a", "start"), (2.0, "a", "b", "delta")]
    assert {d.reason for d in ds[1:10]} == {"min_hold"}
    # the opening shot (before anyone spoke) holds only opening_hold_s; every later shot min_hold_s
    p = SwitchingPolicy(PolicyConfig(min_hold_s=2.0, opening_hold_s=0.5, **NO_COOLDOWN))
    ds = run(p, [{"a": 0.9, "b": 0.1}] + [{"a": 0.1, "b": 0.9}] * 5 + [{"a": 0.9, "b": 0.1}] * 15)
    assert cuts(ds) == [(0.0, "", "a", "start"), (0.6, "a", "b", "delta"), (2.6, "b", "a", "delta")]


def test_cooldown_between_automatic_cuts():
    p = SwitchingPolicy(PolicyConfig(min_hold_s=0.0, cooldown_s=4.0, pingpong_window_s=0.0, dwell_s=0.0))
    seq = [{"a": 0.9, "b": 0.1, "c": 0.0}] * 2 + [{"a": 0.1, "b": 0.9, "c": 0.0}] * 2 + \
          [{"a": 0.1, "b": 0.2, "c": 0.9}] * 30
    ds = run(p, seq)
    c = cuts(ds)
    assert c[1] == (0.4, "a", "b", "delta") and c[2] == (4.4, "b", "c", "delta")
    assert any(d.reason == "cooldown" for d in ds)


def test_delta_threshold():
    p = SwitchingPolicy(PolicyConfig(min_hold_s=0.0, delta=0.15, **NO_COOLDOWN))
    ds = run(p, [{"a": 0.5, "b": 0.3}, {"a": 0.5, "b": 0.64}, {"a": 0.5, "b": 0.66}])
    assert cuts(ds)[1:] == [(0.4, "a", "b", "delta")]
    assert ds[1].reason == "hold" and "b 0.64" in ds[1].detail
    assert "delta 0.16" in ds[2].detail


def test_ping_pong_suppression():
    p = SwitchingPolicy(PolicyConfig(min_hold_s=0.0, cooldown_s=0.0, pingpong_window_s=8.0, dwell_s=0.0))
    flip = [{"a": 0.9, "b": 0.1}, {"a": 0.1, "b": 0.9}] * 30  # scores flap every tick for 12 s
    ds = run(p, flip)
    c = cuts(ds)
    for (t1, f1, to1, _), (t2, f2, to2, _) in zip(c[1:], c[2:]):
        assert not (to2 == f1 and t2 - t1 < 8.0), c  # never back to the camera just left within the window
    assert len(c) <= 3


def test_cut_waits_for_a_word_boundary_with_a_hard_maximum():
    cfg = PolicyConfig(min_hold_s=0.0, speech_wait_max_s=1.0, **NO_COOLDOWN)
    seq = [{"a": 0.9, "b": 0.1}] + [{"a": 0.1, "b": 0.9}] * 12
    talking = CameraContext(speaking=True)
    # a speaks (mid-word) on ticks 1-3, then a pause between words
    ctx = {k: {"a": talking} for k in (1, 2, 3)}
    ds = run(SwitchingPolicy(cfg), seq, ctx=ctx)
    assert [d.reason for d in ds[1:4]] == ["speech_wait"] * 3
    assert cuts(ds)[1] == (0.8, "a", "b", "delta")  # at the boundary, not mid-word
    # a speaks without a pause: the wait is bounded
    ctx = {k: {"a": talking} for k in range(1, 13)}
    ds = run(SwitchingPolicy(cfg), seq, ctx=ctx)
    t_cut = cuts(ds)[1][0]
    assert t_cut == pytest.approx(1.2) and "speech wait timed out" in next(d for d in ds if d.cut and d.t > 0).detail
    # word boundary from ASR word times: safe_cut_at in the future also waits
    ctx = {1: {"a": CameraContext(safe_cut_at=0.5)}}
    ds = run(SwitchingPolicy(cfg), seq, ctx=ctx)
    assert ds[1].reason == "speech_wait" and cuts(ds)[1][0] == pytest.approx(0.4)


def test_wide_fallback_when_nothing_is_interesting():
    p = SwitchingPolicy(PolicyConfig(min_hold_s=0.0, wide_camera="wide", wide_threshold=0.2, **NO_COOLDOWN))
    ds = run(p, [{"a": 0.6, "b": 0.3, "wide": 0.1}, {"a": 0.15, "b": 0.1, "wide": 0.05},
                 {"a": 0.1, "b": 0.1, "wide": 0.05}])
    assert cuts(ds)[1] == (0.2, "a", "wide", "wide_fallback")
    assert ds[2].reason == "hold"  # stays wide while nothing is interesting


def test_maximum_shot_length_forces_a_cutaway():
    p = SwitchingPolicy(PolicyConfig(min_hold_s=0.0, max_shot_s=3.0, **NO_COOLDOWN))
    ds = run(p, [{"a": 0.9, "b": 0.3, "c": 0.4}] * 20)
    assert cuts(ds)[1] == (3.0, "a", "c", "max_shot")


def test_manual_override_take_lock_release_and_timeout():
    cfg = PolicyConfig(min_hold_s=2.0, cooldown_s=4.0, dwell_s=0.0)
    scores = [{"a": 0.9, "b": 0.1, "c": 0.2}] * 60
    ov = {2: [Override("take", "c", operator="ann")], 5: [Override("lock", "b", timeout_s=3.0)],
          30: [Override("lock", "c")], 35: [Override("release")], 40: [Override("take", "zz")]}
    ds = run(SwitchingPolicy(cfg), scores, overrides=ov)
    c = cuts(ds)
    assert c[1] == (0.4, "a", "c", "override_take") and ds[2].transition == "cut" and "by ann" in ds[2].detail
    assert c[2] == (1.0, "c", "b", "override_lock")
    assert {d.reason for d in ds[6:20]} == {"locked"}  # held on b despite a scoring far higher
    assert ds[20].reason == "lock_timeout"  # auto-resume after 3 s
    assert c[3][2] == "a" and c[3][3] == "delta"
    assert ds[30].reason == "override_lock" and ds[30].program == "c"
    assert ds[34].reason == "locked" and ds[35].reason == "override_release"
    assert ds[40].reason == "override_rejected" and "no such camera" in ds[40].detail
    # a camera without a picture is never taken: the operator reads why
    p = SwitchingPolicy(cfg)
    p.step(0.0, {"a": 0.9, "b": 0.1})
    d = p.step(0.2, {"a": 0.9, "b": 0.1}, {"b": CameraContext(stale=True)}, [Override("lock", "b", operator="ann")])
    assert (d.reason, d.program, d.cut) == ("override_rejected", "a", False), d
    assert d.detail == "lock b by ann: b has no picture (stale): the director cuts only to cameras sending video"
    assert d.outcomes == (("rejected", d.detail),)
    # several in one tick: each override has its own outcome, in order
    d = p.step(0.4, {"a": 0.9, "b": 0.1, "c": 0.2}, {"b": CameraContext(stale=True)},
               [Override("lock", "b", operator="bob"), Override("take", "c", operator="ann"),
                Override("take", "zz", operator="eve")])
    assert (d.program, d.cut, d.reason) == ("c", True, "override_take"), d
    assert [o for o, _ in d.outcomes] == ["rejected", "obeyed", "rejected"]
    assert "bob" in d.outcomes[0][1] and d.outcomes[1][1] == "take c by ann" and "no such camera" in d.outcomes[2][1]
    # a release with nothing locked changes nothing, and says so
    d = p.step(0.6, {"a": 0.9, "b": 0.1, "c": 0.2}, overrides=[Override("release", operator="ann")])
    assert d.outcomes == (("ignored", "release by ann: nothing was locked"),) and not d.reason.startswith("override")


def test_program_camera_lost_cuts_away_immediately():
    p = SwitchingPolicy(PolicyConfig(min_hold_s=10.0))
    ds = run(p, [{"a": 0.9, "b": 0.1}] * 3, ctx={2: {"a": CameraContext(stale=True)}})
    assert cuts(ds)[1] == (0.4, "a", "b", "program_lost")
    # and a stale camera is never chosen
    d = SwitchingPolicy().step(0.0, {"a": 0.9, "b": 0.1}, {"a": CameraContext(stale=True)})
    assert d.program == "b"


def test_cut_is_placed_in_the_pause_of_the_last_tick():
    cfg = PolicyConfig(min_hold_s=0.0, **NO_COOLDOWN)
    p = SwitchingPolicy(cfg, tick_s=0.2)
    p.step(0.0, {"a": 0.9, "b": 0.1})
    # a is speaking again at t=1.0, but there was a pause at 0.91 s: the cut goes there, not mid-word at 1.0
    d = p.step(1.0, {"a": 0.1, "b": 0.9}, {"a": CameraContext(speaking=True, quiet_at=0.91)})
    assert d.cut and d.at == 0.91 and d.cut_time == 0.91 and "pause at 0.91" in d.detail
    # a pause older than one tick does not count: wait instead
    p = SwitchingPolicy(cfg, tick_s=0.2)
    p.step(0.0, {"a": 0.9, "b": 0.1})
    d = p.step(1.0, {"a": 0.1, "b": 0.9}, {"a": CameraContext(speaking=True, quiet_at=0.7)})
    assert not d.cut and d.reason == "speech_wait"


def test_dwell_debounces_one_tick_blips():
    p = SwitchingPolicy(PolicyConfig(min_hold_s=0.0, cooldown_s=0.0, pingpong_window_s=0.0, dwell_s=0.6))
    blips = [{"a": 0.9, "b": 0.1}] + [{"a": 0.2, "b": 0.9}, {"a": 0.9, "b": 0.1}] * 5 + [{"a": 0.2, "b": 0.9}] * 5
    ds = run(p, blips)
    c = cuts(ds)
    assert len(c) == 2 and c[1][2] == "b" and c[1][0] == pytest.approx(11 * DT + 0.6)
    assert "dwell" in {d.reason for d in ds}


def test_override_messages_are_validated_before_they_reach_the_policy():
    assert Override.from_message({"action": "lock", "camera": "a", "timeout_s": 30}).timeout_s == 30.0
    for bad, why in [({"action": "lock", "camera": "a", "timeout_s": "abc"}, "timeout_s"),
                     ({"action": "lock", "camera": ["a"]}, "camera"),
                     ({"action": "lock", "camera": "a", "timeout_s": float("nan")}, "timeout_s"),
                     ({"action": "lock", "camera": "a", "timeout_s": -1}, "timeout_s"),
                     ({"action": "take", "camera": "x" * 500}, "camera"),
                     ({"action": "take", "camera": "a", "operator": 7}, "operator"),
                     ({"camera": "a"}, "action"), ({"action": "steal", "camera": "a"}, "action"),
                     ({"action": "take", "camera": "a", "force": True}, "unknown")]:
        with pytest.raises(ValueError, match=why):
            Override.from_message(bad)


def test_policy_configuration_is_validated():
    with pytest.raises(ValueError, match="min_hold_s"):
        PolicyConfig(min_hold_s=-1)
    with pytest.raises(ValueError, match="transition"):
        PolicyConfig(transition="wipe")
    with pytest.raises(ValueError, match="unknown policy setting"):
        PolicyConfig.from_mapping({"min_hold": 2})
    cfg = PolicyConfig(delta=0.3, wide_camera="w")
    assert PolicyConfig.from_mapping(json.loads(cfg.to_json())) == cfg


def test_several_overrides_in_one_tick_decide_where_the_program_ends_up():
    p = SwitchingPolicy(PolicyConfig())
    p.step(0.0, {"a": 0.9, "b": 0.1})
    d = p.step(5.0, {"a": 0.9, "b": 0.1}, overrides=[Override("lock", "b"), Override("release")])
    assert d.cut and (d.from_camera, d.to_camera, d.program) == ("a", "b", "b") and p.s.program == "b"
    assert d.reason == "override_lock" and "released" in d.detail
    d = p.step(5.2, {"a": 0.9, "b": 0.1}, overrides=[Override("take", "a"), Override("take", "b")])
    assert not d.cut and d.program == "b" == p.s.program  # there and back within the tick: no cut on air


def test_a_turn_cuts_past_the_ranker_unless_the_learned_timing_says_to_let_the_new_speaker_settle():
    """b takes the floor at 1.0 s while the ranker still wants a on air (a patient director: a new speaker gets the
    picture only once they have talked for a while). follow_every_turn (the default) cuts at the turn anyway; with it
    off the ranker is obeyed until it ranks b within delta of a (the score cut at 2.6 s), and a turn whose speaker
    the ranker does rank near the shot on air is still a turn."""
    seq = [{"a": 0.9, "b": 0.2, "c": 0.1}] * 13 + [{"a": 0.3, "b": 0.9, "c": 0.1}] * 5
    took = {"b": CameraContext(talking=True, floor=True, floor_since=1.0, onset=0.0)}
    ctx = {k: took for k in range(5, 18)}
    follows = run(SwitchingPolicy(PolicyConfig(**NO_COOLDOWN)), seq, ctx=ctx)
    assert cuts(follows)[1][2:] == ("b", "turn") and cuts(follows)[1][0] <= 2.0
    settles = run(SwitchingPolicy(PolicyConfig(follow_every_turn=False, **NO_COOLDOWN)), seq, ctx=ctx)
    assert cuts(settles) == [(0.0, "", "a", "start"), (2.6, "a", "b", "delta")]
    near = [{"a": 0.5, "b": 0.45, "c": 0.1}] * 18  # the ranker is torn: the floor decides
    assert cuts(run(SwitchingPolicy(PolicyConfig(follow_every_turn=False, **NO_COOLDOWN)), near, ctx=ctx))[1][2:] == \
        ("b", "turn")
    with pytest.raises(ValueError, match="follow_every_turn"):
        PolicyConfig(follow_every_turn="no")


def test_no_cutaway_from_a_talking_floor_holder_to_a_silent_camera():
    """The speaker's score collapses (the detector lost them in a close-up) while they talk: a silent listener's face
    must not take the picture mid-utterance. A camera that is talking still can (by the turn rules), and so can a
    silent one once the speaker stops."""
    talking = {"a": CameraContext(talking=True, floor=True, floor_since=0.0, onset=0.0)}
    seq = [{"a": 0.8, "b": 0.3}] + [{"a": 0.1, "b": 0.6}] * 20
    held = run(SwitchingPolicy(PolicyConfig(**NO_COOLDOWN)), seq, ctx={k: talking for k in range(1, 16)})
    assert cuts(held) == [(0.0, "", "a", "start"), (3.2, "a", "b", "delta")]  # only after a stopped (tick 16)
    assert {d.reason for d in held[11:16]} == {"speaker_hold"}
    old = run(SwitchingPolicy(PolicyConfig(hold_speaker=False, **NO_COOLDOWN)), seq, ctx={k: talking for k in range(1, 16)})
    assert cuts(old)[1][0] < 3.2  # the rule is what holds it
