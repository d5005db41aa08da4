"""`aiobs model list|promote|rollback`: the registered rankers in the settings' MLflow store, and the audited moves of
the `champion` alias by hand. The logic lives in ranker/registry.py; this is the front door.

Exit status: 0 done, 1 a registry error (unknown model/version/alias, nothing to roll back to, an unreachable
store), 2 a usage error. Errors go to stderr, prefixed "aiobs model:".
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_NAME = "aiobs-ranker"  # ranker.registry.MODEL_NAME (not imported here: building the parser stays light)
PREFIX = "aiobs model:"


def add_parser(sub) -> argparse.ArgumentParser:
    """The `model` sub-command and its own sub-commands, on the `aiobs` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=DEFAULT_NAME, help=f"registered model name (default {DEFAULT_NAME})")
    m = sub.add_parser("model", help="registered rankers: list the versions, promote one to champion, roll back "
                                     "(every move audited on the MLflow versions)")
    msub = m.add_subparsers(dest="model_command", required=True, metavar="{list,promote,rollback}")
    msub.add_parser("list", parents=[common], help="one line per registered version: aliases, created, the gate's "
                                                   "decision, key metrics, the learned policy timing")
    pr = msub.add_parser("promote", parents=[common], help="move `champion` to VERSION, audited (who, when, why)")
    pr.add_argument("version", help="version number (3 or v3) or an alias (e.g. challenger)")
    pr.add_argument("--reason", required=True, help="why (recorded on the versions)")
    pr.add_argument("--who", help="who decides (default $USER)")
    rb = msub.add_parser("rollback", parents=[common],
                         help="move `champion` back to the champion it replaced (or --to VERSION), audited")
    rb.add_argument("--reason", required=True, help="why (recorded on the versions)")
    rb.add_argument("--to", help="version to roll back to (default: the previous champion)")
    rb.add_argument("--who", help="who decides (default $USER)")
    return m


def run(args, settings) -> int:
    """Run `aiobs model <command>` against settings.mlflow_tracking_uri."""
    from ranker.base import RankerError

    cmd = args.model_command
    if cmd in ("promote", "rollback"):
        if not " ".join((args.reason or "").split()):
            return _usage("--reason must say why (it is recorded on the model versions)")
        for flag in ("version", "to"):
            value = getattr(args, flag, None)
            if value is not None:
                value = _version_arg(value)
                if not value:
                    return _usage(f"{'VERSION' if flag == 'version' else '--to'} takes a version number (3 or v3) "
                                  "or an alias")
                setattr(args, flag, value)
    try:
        if cmd == "list":
            return _list(settings.mlflow_tracking_uri, args.name)
        return _move(settings.mlflow_tracking_uri, args)
    except RankerError as e:
        print(f"{PREFIX} {e}", file=sys.stderr)
        return 1


def _usage(message: str) -> int:
    print(f"{PREFIX} {message}", file=sys.stderr)
    return 2


def _version_arg(value: str) -> str:
    value = value.strip()
    if value[:1] in "vV" and value[1:].isdigit():
        value = value[1:]
    return value if value and all(c.isalnum() or c in "-_." for c in value) else ""


def _list(tracking_uri: str, name: str) -> int:
    from ranker.registry import CHALLENGER, CHAMPION, list_versions, store_label

    versions = list_versions(tracking_uri, name)
    holders = {a: v.version for v in versions for a in v.aliases}
    aliases = ", ".join(f"{a} v{holders[a]}" for a in (CHAMPION, CHALLENGER) if a in holders) or "no aliases"
    print(f"{name} in {store_label(tracking_uri)}: {len(versions)} version(s); {aliases}")
    if not versions:
        return 0
    width = max(len(",".join(v.aliases)) for v in versions) or 1
    vwidth = max(len(v.version) for v in versions) + 1
    for v in versions:
        print(format_version(v, width, vwidth))
    return 0


def format_version(v, alias_width: int = 20, version_width: int = 3) -> str:
    """One `aiobs model list` line."""
    created = v.created.strftime("%Y-%m-%d %H:%M UTC") if v.created else "?"
    parts = [f"{'v' + v.version:<{version_width}}", f"{','.join(v.aliases) or '-':<{alias_width}}", created]
    if v.promoted is None:
        parts.append("gate: none recorded")
    else:
        reason = v.reason.split(": ", 1)[1] if ": " in v.reason else v.reason
        parts.append(f"{'promoted' if v.promoted else 'not promoted'} ({_short(reason, 70)})")
    names = {"cut_top1": "cut_top1", "replay_frame_agreement": "agreement", "real_speaker_follow": "real_follow"}
    if v.metrics:
        parts.append(" ".join(f"{names.get(k, k)} {_num(x)}" for k, x in v.metrics.items()))
    if v.policy:
        what = "policy (the front door's: no learned timing kept)" if v.policy_learned is False else "policy"
        parts.append(what + " " + " ".join(f"{k}={_num(x)}" for k, x in v.policy.items()))
    manual = [e for e in v.audit if e.get("action") != "gate"]
    if manual:
        last = manual[-1]
        parts.append(f"last {last.get('action')} by {last.get('who')} {str(last.get('when', ''))[:16]}")
    return "  ".join(parts)


def _num(x) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        return f"{x:.3f}".rstrip("0").rstrip(".") if abs(x) < 1000 else f"{x:g}"
    return str(x)


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1].rstrip() + "…"


def _move(tracking_uri: str, args) -> int:
    from ranker.registry import promote, rollback, store_label

    if args.model_command == "promote":
        change = promote(tracking_uri, args.version, args.reason, who=args.who, name=args.name)
    else:
        change = rollback(tracking_uri, args.reason, to=args.to, who=args.who, name=args.name)
    e = change.entry
    was = f"v{change.from_version}" if change.from_version else "none"
    print(f"{change.name}: champion {was} -> v{change.to_version} ({e['action']} by {e['who']} at {e['when']}: "
          f"{e['why']})")
    print(f"audited on v{change.to_version}" + (f" and v{change.from_version}" if change.from_version else "")
          + f" (tag audit, description) in {store_label(tracking_uri)}")
    return 0
