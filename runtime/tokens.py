"""Least-privilege LiveKit access tokens (`aiobs token`), one role per participant.

    camera    publishes its camera + microphone; no data messages, subscribes to nothing
    viewer    subscribes; publishes nothing (no media, no data)
    operator  subscribes and sends data messages (overrides on `aiobs.override`); publishes no media
    director  publishes the program (camera + microphone sources), subscribes, sends data (the AI-OBS director)

Every token denies `can_update_own_metadata`, so a participant cannot rewrite its own metadata or attributes (and
with them its role). The role is written twice by whoever holds the API secret: into the participant attributes
(`aiobs.role`, what `role_of` reads first) and into the metadata JSON {"role": ...} (for clients that only see
metadata). A participant that arrives with no role (a token minted elsewhere) has role "".
"""

from __future__ import annotations

import datetime
import json
import unicodedata
from typing import Any

ROLE_ATTRIBUTE = "aiobs.role"
MAX_IDENTITY_LEN = 128
DEFAULT_TTL_S = 3600.0
MAX_TTL_S = 7 * 24 * 3600.0

# role -> the VideoGrants permissions it gets (everything else is left at "no": no room admin / create / list /
# record, no ingress admin, no agent, not hidden)
ROLES: dict[str, dict[str, Any]] = {
    "camera": dict(can_publish=True, can_publish_data=False, can_subscribe=False,
                   can_publish_sources=["camera", "microphone"]),
    "viewer": dict(can_publish=False, can_publish_data=False, can_subscribe=True),
    "operator": dict(can_publish=False, can_publish_data=True, can_subscribe=True),
    # not hidden: a hidden participant's tracks are not announced, and the room must see the program track
    "director": dict(can_publish=True, can_publish_data=True, can_subscribe=True,
                     can_publish_sources=["camera", "microphone"]),
}
ROLE_NAMES = {"camera": "camera", "viewer": "viewer", "operator": "operator", "director": "AI-OBS director"}


class TokenError(ValueError):
    """A token cannot be minted (no API key/secret, unknown role, bad identity or TTL); the message says why."""


def _check_text(what: str, v: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TokenError(f"{what} must be a non-empty string")
    if len(v) > MAX_IDENTITY_LEN:
        raise TokenError(f"{what} must be at most {MAX_IDENTITY_LEN} characters, not {len(v)}")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in v):
        raise TokenError(f"{what} must not contain control characters: {v!r:.80}")
    return v


def mint(settings, role: str, identity: str, room: str | None = None, ttl_s: float = DEFAULT_TTL_S, *,
         name: str | None = None) -> str:
    """A signed LiveKit JWT for `identity` joining `room` (default: settings.livekit_room) as `role`."""
    from livekit import api

    key, secret = settings.livekit_api_key, settings.livekit_api_secret
    if not (key and secret):
        raise TokenError("minting a LiveKit token needs AIOBS_LIVEKIT_API_KEY and AIOBS_LIVEKIT_API_SECRET")
    if role not in ROLES:
        raise TokenError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    identity = _check_text("identity", identity)
    room = _check_text("room", room or settings.livekit_room)
    try:
        ttl = float(ttl_s)
    except (TypeError, ValueError):
        raise TokenError(f"ttl must be a number of seconds, not {ttl_s!r}") from None
    if not 0 < ttl <= MAX_TTL_S:  # also false for NaN
        raise TokenError(f"ttl must be in (0, {MAX_TTL_S:.0f}] seconds, not {ttl_s!r}")
    grants = api.VideoGrants(room_join=True, room=room, can_update_own_metadata=False, **ROLES[role])
    return (api.AccessToken(key, secret).with_identity(identity).with_name(name or ROLE_NAMES[role])
            .with_grants(grants).with_attributes({ROLE_ATTRIBUTE: role})
            .with_metadata(json.dumps({"role": role}, separators=(",", ":")))
            .with_ttl(datetime.timedelta(seconds=ttl)).to_jwt())


def director_token(settings, room: str, identity: str = "aiobs-director") -> str:
    """The AI-OBS director's own token (`aiobs live`): role director, LiveKit's default 6 h TTL."""
    return mint(settings, "director", identity, room, ttl_s=6 * 3600.0)


def role_of(participant) -> str:
    """The role a participant was minted with: its `aiobs.role` attribute, else its metadata JSON's "role", else
    "". Anything that is not one of ROLES counts as no role."""
    attrs = getattr(participant, "attributes", None) or {}
    try:
        role = attrs.get(ROLE_ATTRIBUTE) or ""
    except AttributeError:
        role = ""
    if not role:
        try:
            meta = json.loads(getattr(participant, "metadata", "") or "{}")
            role = meta.get("role", "") if isinstance(meta, dict) else ""
        except (TypeError, ValueError):
            role = ""
    return role if isinstance(role, str) and role in ROLES else ""
