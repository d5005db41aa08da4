"""Edit decision exports an editor can open: CMX3600 EDL and OpenTimelineIO."""

from __future__ import annotations

from pathlib import Path


def timecode(seconds: float, fps: int) -> str:
    f = int(round(max(0.0, seconds) * fps))
    return f"{f // (3600 * fps):02d}:{f // (60 * fps) % 60:02d}:{f // fps % 60:02d}:{f % fps:02d}"


def _reel(cam_id: str) -> str:
    return "".join(ch for ch in cam_id.upper() if ch.isalnum())[:8] or "AX"


def write_edl(path: Path, shots, cams, fps: int = 25, title: str = "AI-OBS program") -> None:
    """One event per shot; record times on the program, source times in the camera's own file."""
    by_id = {c.id: c for c in cams}
    lines = [f"TITLE: {title}", "FCM: NON-DROP FRAME", ""]
    for n, s in enumerate(shots, 1):
        cam = by_id[s.camera]
        src_in, src_out = s.start - cam.offset, s.end - cam.offset
        trans = "C   "
        if s.transition == "dissolve" and n > 1:
            trans = f"D    {int(round(0.3 * fps)):03d}"
        lines.append(f"{n:03d}  {_reel(s.camera):<8} V     {trans:<8} {timecode(src_in, fps)} {timecode(src_out, fps)} "
                     f"{timecode(s.start, fps)} {timecode(s.end, fps)}")
        lines.append(f"* FROM CLIP NAME: {cam.path.name}")
        if s.reason:
            lines.append(f"* COMMENT: {s.reason}")
        lines.append("")
    Path(path).write_text("\n".join(lines))


def write_otio(path: Path, shots, cams, fps: int = 25, dissolve_s: float = 0.3) -> None:
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
    otio.adapters.write_to_file(tl, str(path))
