"""Edit decision exports an editor can open: CMX3600 EDL and OpenTimelineIO."""

from __future__ import annotations

from pathlib import Path


def timecode(seconds: float, fps: int) -> str:
    return _tc(int(round(max(0.0, seconds) * fps)), fps)


def _tc(f: int, fps: int) -> str:
    f = max(0, f)
    return f"{f // (3600 * fps):02d}:{f // (60 * fps) % 60:02d}:{f // fps % 60:02d}:{f % fps:02d}"


def _event(n: int, s, cam, channel: str, trans: str, fps: int) -> str:
    """One CMX3600 event line: source and record spans have exactly the same number of frames."""
    rec_in, rec_out = int(round(s.start * fps)), int(round(s.end * fps))
    src_in = int(round((s.start - cam.offset) * fps))
    return (f"{n:03d}  {_reel(s.camera):<8} {channel:<5} {trans:<8} {_tc(src_in, fps)} "
            f"{_tc(src_in + rec_out - rec_in, fps)} {_tc(rec_in, fps)} {_tc(rec_out, fps)}")


def _reel(cam_id: str) -> str:
    return "".join(ch for ch in cam_id.upper() if ch.isalnum())[:8] or "AX"


def audio_shots(shots, audio_lead_s: float) -> list:
    """The program audio's shots: the picture's, each cut `audio_lead_s` earlier (J-cut) or later (L-cut)."""
    from dataclasses import replace

    if not audio_lead_s:
        return list(shots)
    out = [replace(s, start=s.start - (audio_lead_s if i else 0.0),
                   end=s.end - (audio_lead_s if i + 1 < len(shots) else 0.0)) for i, s in enumerate(shots)]
    return [s for s in out if s.end > s.start]


def write_edl(path: Path, shots, cams, fps: int, dissolve_s: float, audio_lead_s: float = 0.0,
              title: str = "AI-OBS program") -> None:
    """One event per shot; record times on the program, source times in the camera's own file. With a J/L-cut
    (`audio_lead_s` != 0) the picture's events are video-only (V) and the program audio gets its own (A) events."""
    by_id = {c.id: c for c in cams}
    lines = [f"TITLE: {title}", "FCM: NON-DROP FRAME", ""]
    for n, s in enumerate(shots, 1):
        cam = by_id[s.camera]
        trans = "C   "
        if s.transition == "dissolve" and n > 1:
            trans = f"D    {int(round(dissolve_s * fps)):03d}"
        channel = "V" if audio_lead_s else "B"
        lines.append(_event(n, s, cam, channel, trans, fps))
        lines.append(f"* FROM CLIP NAME: {cam.path.name}")
        if s.reason:
            lines.append(f"* COMMENT: {s.reason}")
        lines.append("")
    if audio_lead_s:
        for n, s in enumerate(audio_shots(shots, audio_lead_s), len(shots) + 1):
            cam = by_id[s.camera]
            lines.append(_event(n, s, cam, "A", "C   ", fps))
            lines.append(f"* FROM CLIP NAME: {cam.path.name}")
            lines.append("")
    Path(path).write_text("\n".join(lines))


def write_otio(path: Path, shots, cams, fps: int, dissolve_s: float, audio_lead_s: float = 0.0,
               narration: list[dict] | None = None) -> None:
    """A video track of the shots and an audio track of the program audio (split from the picture by a J/L-cut);
    narration lines (`Utterance.as_row()`) as markers on the program track, spanning each line."""
    import opentimelineio as otio

    by_id = {c.id: c for c in cams}
    tl = otio.schema.Timeline(name="AI-OBS program")
    track = otio.schema.Track(name="program", kind=otio.schema.TrackKind.Video)
    tl.tracks.append(track)
    for n, s in enumerate(shots):
        cam = by_id[s.camera]
        if n > 0 and s.transition == "dissolve":
            half = otio.opentime.RationalTime(dissolve_s * fps / 2, fps)
            track.append(otio.schema.Transition(transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                                                in_offset=half, out_offset=half))
        start = otio.opentime.RationalTime(round((s.start - cam.offset) * fps), fps)
        dur = otio.opentime.RationalTime(round(s.end * fps) - round(s.start * fps), fps)
        clip = otio.schema.Clip(
            name=f"{s.camera} ({s.reason})",
            media_reference=otio.schema.ExternalReference(target_url=cam.path.resolve().as_uri()),
            source_range=otio.opentime.TimeRange(start, dur),
            metadata={"aiobs": {"camera": s.camera, "reason": s.reason, "program_start_s": s.start,
                                "program_end_s": s.end}})
        track.append(clip)
    for line in narration or []:
        span = otio.opentime.TimeRange(otio.opentime.RationalTime(round(line["start"] * fps), fps),
                                       otio.opentime.RationalTime(max(1, round((line["end"] - line["start"]) * fps)),
                                                                  fps))
        track.markers.append(otio.schema.Marker(name=line["text"], marked_range=span,
                                                color=otio.schema.MarkerColor.PURPLE,
                                                metadata={"aiobs": {"narration": line["event"],
                                                                    "provider": line["provider"]}}))
    sound = otio.schema.Track(name="program audio", kind=otio.schema.TrackKind.Audio)
    tl.tracks.append(sound)
    for s in audio_shots(shots, audio_lead_s):
        cam = by_id[s.camera]
        start = otio.opentime.RationalTime(round((s.start - cam.offset) * fps), fps)
        dur = otio.opentime.RationalTime(round(s.end * fps) - round(s.start * fps), fps)
        sound.append(otio.schema.Clip(
            name=f"{s.camera} audio", source_range=otio.opentime.TimeRange(start, dur),
            media_reference=otio.schema.ExternalReference(target_url=cam.path.resolve().as_uri()),
            metadata={"aiobs": {"camera": s.camera, "program_start_s": s.start, "program_end_s": s.end}}))
    otio.adapters.write_to_file(tl, str(path))
