"""Editor-grade cutting on conversations unlike the demo sample, against the loudest-mic switcher on the same
sessions (bench/direction.py runs all of them; CI asserts the quality targets on two)."""

from __future__ import annotations

import pytest

from bench.direction import SESSIONS, run_session


@pytest.mark.parametrize("name", ["chat4", "overlap3"])
def test_conversation_is_cut_like_an_editor_would(name, tmp_path):
    res = run_session(name, SESSIONS[name], tmp_path / "data")
    ours, peer = res["aiobs"], res["peer"]
    assert ours["speaker_follow"] >= 0.95 and ours["speaker_follow"] > peer["speaker_follow"], res
    assert ours["mid_word_cuts"] == 0, res  # no cut chops anyone's word on the program audio
    assert ours["backchannel_cuts"] == 0, res  # "yeah" from a listener never takes the picture
    assert ours["turn_reaction_p50_s"] <= 0.5, res  # reacts at least as fast as the peer (lookahead)
    assert ours["turn_reaction_p50_s"] <= peer["turn_reaction_p50_s"], res
