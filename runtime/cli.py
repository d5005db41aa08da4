"""The `aiobs` command line. Each sub-command is a thin front door onto the packages; no logic lives here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from .settings import SettingsError, load_settings


POLICY_FLAGS = {"min_hold": "min_hold_s", "cooldown": "cooldown_s", "delta": "delta", "wide": "wide_camera",
                "max_shot": "max_shot_s"}


def _settings(args):
    """Settings from YAML + environment, then this command's flags (the policy flags of `direct` among them)."""
    policy = {key: getattr(args, flag) for flag, key in POLICY_FLAGS.items() if getattr(args, flag, None) is not None}
    s = load_settings(args.config, data_dir=getattr(args, "data_dir", None), policy=policy or None)
    s.ensure_dirs()
    import os

    os.environ.setdefault("YOLO_CONFIG_DIR", str(s.data_dir / "ultralytics"))  # never ~/.config
    return s


def cmd_doctor(args) -> int:
    from .doctor import doctor

    return doctor(_settings(args), mode=args.mode)


def cmd_ingest(args) -> int:
    """Ship the spool into ClickHouse (in embedded mode, the process that owns the chdb path does this)."""
    from features.shipper import SegmentShipper
    from features.store import FeatureStore, describe_dsn

    s = _settings(args)
    with FeatureStore(s.clickhouse_dsn) as store:
        shipper = SegmentShipper(s.spool_dir, store, keep_shipped=args.keep_shipped)
        if args.follow:
            stop = threading.Event()
            try:
                shipper.run(stop, interval_s=args.interval)
            except KeyboardInterrupt:
                stop.set()
            return 0
        report = shipper.ship_once()
        print(f"ingest: {report.segments} segment(s), {report.rows} row(s) into {describe_dsn(s.clickhouse_dsn)}; "
              f"{report.pending} pending; quarantined {len(report.quarantined)} "
              f"(rows dropped {report.rows_dropped}, held {report.rows_held})"
              + (f"; error: {report.error}" if report.error else ""))
        return 1 if report.error else 0


def cmd_import(args) -> int:
    from .importer import ImportFileError, import_file

    s = _settings(args)
    try:
        summary = import_file(args.file, s, dry_run=args.dry_run)
    except ImportFileError as e:
        print(f"aiobs import: {e}", file=sys.stderr)
        return 1
    verb = "checked (dry run, nothing written)" if args.dry_run else "imported"
    print(f"import: {args.file} {verb}: {summary.line()}")
    return 0


def cmd_tables(args) -> int:
    from features.schema import TABLES
    from features.store import FeatureStore, describe_dsn

    s = _settings(args)
    with FeatureStore(s.clickhouse_dsn) as store:
        store.ensure_schema()
        print(describe_dsn(s.clickhouse_dsn))
        for name in TABLES:
            print(f"  {name:<14} {store.count(name):>12,d} rows")
    return 0


def cmd_sample(args) -> int:
    from .sample import build_sample

    gt = build_sample(args.out, cameras=args.cameras, duration_s=args.duration, seed=args.seed)
    cams = sorted(Path(args.out).glob("cam*.mp4"))
    print(f"sample: {len(cams)} cameras and {gt.name} in {args.out}")
    print(f"next: aiobs direct {' '.join(str(c) for c in cams)} --truth {gt} --out {Path(args.out) / 'program'}")
    return 0


def cmd_direct(args) -> int:
    from .compositor import CompositorConfig
    from .direct import DirectError, direct, read_operator_script

    s = _settings(args)
    offsets = None
    if args.offsets:
        try:
            values = [float(o) for o in args.offsets.split(",")]
            if len(values) != len(args.inputs):
                raise ValueError
            offsets = {Path(p).stem: v for p, v in zip(args.inputs, values)}
        except ValueError:
            print(f"aiobs direct: --offsets takes comma-separated seconds, one per input ({len(args.inputs)})",
                  file=sys.stderr)
            return 2
    ranker = None
    if args.ranker:
        from ranker.base import RankerError
        from ranker.xgb import XGBoostRanker

        try:
            ranker = XGBoostRanker.load(args.ranker, tracking_uri=s.mlflow_tracking_uri)
        except RankerError as e:
            print(f"aiobs direct: {e}", file=sys.stderr)
            return 2
    comp = CompositorConfig(size=args.size, tally=args.tally)
    try:
        operator = read_operator_script(args.operator) if args.operator else None
        r = direct(args.inputs, args.out, s, offsets=offsets, truth=args.truth, ranker=ranker,
                   compositor=comp, asr=args.asr, operator=operator, narrate=args.narrate)
    except DirectError as e:
        print(f"aiobs direct: {e}", file=sys.stderr)
        return 1
    for w in r.warnings:
        print(f"warning: {w}", file=sys.stderr)
    m = r.metrics
    print(f"direct: {r.duration_s:.1f} s program, {m['cuts']} cuts ({m['switches_per_min']:.2f}/min, mean shot "
          f"{m['mean_shot_s']:.1f} s), ping-pong {m['ping_pong']}, mid-word {m['mid_word_cuts']}, speaker follow "
          f"{m['speaker_follow']}; {r.timings['x_realtime']}x real time")
    if args.narrate:
        import json

        from .narration.narrator import narration_outcomes

        n = json.loads((Path(r.out_dir) / "report.json").read_text()).get("narration") or {}
        voices = sorted({line["provider"] for line in n.get("lines", [])})
        print(f"narration: {len(n.get('lines', []))} line(s) aired" + (f" by {', '.join(voices)}" if voices else "")
              + f"; {narration_outcomes(n.get('stats', {}))}")
    print(f"wrote {r.out_dir}/program.mp4, cuts.edl, cuts.otio, report.html, report.json")
    return 0


def cmd_simulate(args) -> int:
    from features.store import FeatureStore, describe_dsn
    from ranker.simulate import HiddenDirector, SimConfig, simulate

    for ok, what in ((args.sessions >= 1, "--sessions must be at least 1"),
                     (args.cameras >= 3, "--cameras must be at least 3 (the simulator stages a wide shot and two "
                                         "speakers)"),
                     (args.duration >= 10, "--duration must be at least 10 seconds (a session with a few turns)"),
                     (args.real >= 0, "--real must be 0 or more")):
        if not ok:
            print(f"aiobs simulate: {what}", file=sys.stderr)
            return 2
    s = _settings(args)
    cfg = SimConfig(cameras=args.cameras, duration_s=args.duration, director=HiddenDirector(family=args.director),
                    sensors=args.sensors)
    try:
        with FeatureStore(s.clickhouse_dsn) as store:
            counts = simulate(store, args.sessions, cfg, seed=args.seed)
    except ValueError as e:
        print(f"aiobs simulate: {e}", file=sys.stderr)
        return 1
    print(f"simulate: {args.sessions} synthetic session(s) into {describe_dsn(s.clickhouse_dsn)}: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if args.real:
        from .direct import DirectError
        from .realset import add_training_sessions

        try:
            n = add_training_sessions(s, args.real, seed=args.seed, progress=print)
        except DirectError as e:
            print(f"aiobs simulate: {e}", file=sys.stderr)
            return 1
        print(f"simulate: {n} recorded conversation(s) through the real analysis, labelled by the truth-following "
              f"operator script, into {describe_dsn(s.clickhouse_dsn)}")
    return 0


def cmd_live(args) -> int:
    import asyncio

    from .live import LiveDirector, LiveError
    from .model_manager import ModelManager

    s = _settings(args)
    try:
        if args.delay is not None:
            s.program_delay_s = args.delay
        if args.program_audio:
            s.program_audio = args.program_audio
        if args.asr:
            s.live_asr = True
    except ValueError as e:
        print(f"aiobs live: {str(e).splitlines()[0]}: {str(e).splitlines()[-1].strip()}", file=sys.stderr)
        return 2
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1")
    models = ModelManager.from_settings(s)
    models.refresh()  # champion / challenger from the registry; the rule baseline if it has none
    stop_polling = threading.Event()
    models.start(stop_polling)
    try:
        director = LiveDirector(s, args.room, models=models, program_size=args.size, narrate=args.narrate)
        report = asyncio.run(director.run(duration_s=args.duration))
    except LiveError as e:
        print(f"aiobs live: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_polling.set()
    if not report.cameras:
        print("live: no camera joined the room: nothing was directed (the program showed black)", file=sys.stderr)
    print(f"live: {report.ticks} ticks ({report.missed_ticks} skipped, {report.failed_ticks} failed), cameras "
          f"{sorted(report.cameras)}, {len(report.cuts)} cuts, {report.overrides} overrides "
          f"({report.rejected_overrides} malformed, {report.unauthorised_overrides} not from an operator), "
          f"{report.program_frames} program frames, {report.program_audio_s:.0f} s of program sound "
          f"({report.program_audio_dropped_s:.2f} s left out after stalls), "
          f"{report.late_cuts} late cuts" + (f", {len(report.narration_lines)} narration lines" if args.narrate
                                             else "")
          + (f", LiveKit link lost {report.link_lost} time(s), down {report.link_down_s:.1f} s (the room got no "
             f"program meanwhile)" if report.link_lost else ""))
    print(f"live: timing: {report.timing()}")
    return 0


def cmd_token(args) -> int:
    """Print a least-privilege LiveKit access token (JWT) for one participant role."""
    from .tokens import TokenError, mint

    s = load_settings(args.config)  # no data dirs are created: minting needs only the LiveKit key and secret
    try:
        print(mint(s, args.role, args.identity, args.room, ttl_s=args.ttl))
    except TokenError as e:
        print(f"aiobs token: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_model(args) -> int:
    """aiobs model list|promote|rollback: the registered rankers and audited champion moves (runtime/models_cli.py)."""
    from .models_cli import run

    return run(args, _settings(args))


def frame_size(text: str) -> tuple[int, int]:
    """--size: 'WxH' -> (W, H), even (video encoders want even sizes) and within 16-7680 px a side."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WxH, e.g. 1280x720") from None
    if not (16 <= w <= 7680 and 16 <= h <= 7680):
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be 16-7680 px")
    return w // 2 * 2, h // 2 * 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aiobs", description="AI-OBS: learned multi-camera auto-director")
    p.add_argument("--config", help="YAML settings file (default $AIOBS_CONFIG or ./aiobs.yaml)")
    p.add_argument("--data-dir", help="root of local stores (overrides AIOBS_DATA_DIR)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", help="report every component; non-zero exit if the chosen mode cannot run")
    d.add_argument("--mode", choices=["files", "live", "train", "all"], default="files")
    d.set_defaults(fn=cmd_doctor)

    i = sub.add_parser("ingest", help="ship spooled feature-log segments into ClickHouse")
    i.add_argument("--follow", action="store_true", help="keep shipping until interrupted")
    i.add_argument("--interval", type=float, default=1.0)
    i.add_argument("--keep-shipped", action="store_true", help="move shipped segments to shipped/ instead of deleting")
    i.set_defaults(fn=cmd_ingest)

    sm = sub.add_parser("sample", help="build a multi-camera session from packaged media, with ground truth")
    sm.add_argument("--out", required=True)
    sm.add_argument("--cameras", type=int, default=5)
    sm.add_argument("--duration", type=float, default=60.0)
    sm.add_argument("--seed", type=int, default=0)
    sm.set_defaults(fn=cmd_sample)

    dr = sub.add_parser("direct", help="auto-edit recorded camera files into program.mp4 + EDL/OTIO + report")
    dr.add_argument("inputs", nargs="+", help="one video file (with its own audio) per camera")
    dr.add_argument("--out", required=True)
    dr.add_argument("--offsets", help="comma-separated start offsets (s) per input; default: audio alignment")
    dr.add_argument("--truth", help="ground_truth.json (from aiobs sample) for speaker-follow / mid-word metrics")
    dr.add_argument("--ranker", help="XGBoost model file or MLflow URI (default: the weighted baseline)")
    dr.add_argument("--asr", action="store_true", help="run Whisper (keywords, word boundaries); slower")
    dr.add_argument("--operator", help="an operator's actions to obey and log (JSON list of {t, action, camera, "
                                       "timeout_s}): a human's cut list becomes labels for the learned ranker")
    dr.add_argument("--min-hold", type=float, help="policy setting (default: settings' policy)")
    dr.add_argument("--cooldown", type=float, help="policy setting (default: settings' policy)")
    dr.add_argument("--delta", type=float, help="policy setting (default: settings' policy)")
    dr.add_argument("--max-shot", type=float, help="policy setting (default: settings' policy)")
    dr.add_argument("--wide", help="camera id of the wide shot (fallback when nothing is interesting); policy setting")
    dr.add_argument("--size", type=frame_size, help="program size WxH (default: the first input's)")
    dr.add_argument("--tally", action="store_true", help="burn a score/tally overlay into the program")
    dr.add_argument("--narrate", action="store_true", help="narrate the program in its pauses (voice: the "
                                                            "tts_backend setting; lines in the report and OTIO)")
    dr.set_defaults(fn=cmd_direct)

    lv = sub.add_parser("live", help="direct a LiveKit room: subscribe to the cameras, publish the `program` track")
    lv.add_argument("--room", help="room name (default AIOBS_LIVEKIT_ROOM)")
    lv.add_argument("--duration", type=float, help="seconds to run (default: until interrupted)")
    lv.add_argument("--size", type=frame_size, default=(1280, 720), help="program size WxH (default 1280x720)")
    lv.add_argument("--delay", type=float, help="broadcast delay in seconds: cuts are placed on word boundaries "
                                                "inside it (default AIOBS_PROGRAM_DELAY_S, 0)")
    lv.add_argument("--program-audio", type=str.lower, choices=("follow", "mix", "off"),
                    help="program sound: the program camera's mic, every mic mixed, or none (default follow)")
    lv.add_argument("--narrate", action="store_true", help="narrate in the pauses: a `narration` track, and "
                                                            "in the program sound unless narration_in_program is off")
    lv.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (127.0.0.1)")
    lv.add_argument("--asr", action="store_true", help="run Whisper on every mic (keywords, word times); "
                                                       "costly on a CPU")
    lv.set_defaults(fn=cmd_live)

    si = sub.add_parser("simulate", help="write synthetic directed sessions (marked synthetic) into ClickHouse")
    si.add_argument("--sessions", type=int, default=20)
    si.add_argument("--cameras", type=int, default=5)
    si.add_argument("--duration", type=float, default=300.0, help="seconds per session")
    si.add_argument("--seed", type=int, default=0)
    si.add_argument("--real", type=int, default=0, metavar="N",
                    help="also N generated conversations through the REAL analysis (aiobs direct), labelled by a "
                         "scripted operator following the ground truth (~25 s each on a CPU)")
    si.add_argument("--director", default="mixed", choices=["utility", "patient", "reactions", "silence", "mixed"],
                    help="the hidden human director: a utility over the scene tick by tick, or a family whose choices "
                         "depend on the last seconds (see ranker/simulate.py); mixed = one family per session")
    si.add_argument("--sensors", default="varied", choices=["varied", "ideal"],
                    help="how the analysis sees each session: varied = a setup drawn per session (framing, faces "
                         "found or not, VLM/ASR on or off, mic bleed, b-roll noise), as real deployments differ; "
                         "ideal = every stage on, clean mics")
    si.set_defaults(fn=cmd_simulate)

    tk = sub.add_parser("token", help="print a LiveKit access token for one role: camera (publish only), viewer "
                                      "(subscribe only), operator (subscribe + overrides), director")
    tk.add_argument("--role", required=True, choices=["camera", "viewer", "operator", "director"])
    tk.add_argument("--identity", required=True, help="the participant identity (a camera id, an operator's name)")
    tk.add_argument("--room", help="room name (default AIOBS_LIVEKIT_ROOM)")
    tk.add_argument("--ttl", type=float, default=3600.0, help="seconds the token may be used to join (default 3600)")
    tk.set_defaults(fn=cmd_token)

    im = sub.add_parser("import", help="load labelled sessions from a parquet file (column contract: "
                                       "runtime/importer.py) into the feature log, through the director core")
    im.add_argument("file")
    im.add_argument("--dry-run", action="store_true", help="check the file and summarise it; write nothing")
    im.set_defaults(fn=cmd_import)

    t = sub.add_parser("tables", help="create/migrate the feature-log tables and print their row counts")
    t.set_defaults(fn=cmd_tables)

    from .models_cli import add_parser as add_model_parser

    add_model_parser(sub).set_defaults(fn=cmd_model)
    # the global options also after the command (`aiobs doctor --config x.yaml`): where they are not given there,
    # they leave what was given before it alone
    for cmd in sub.choices.values():
        cmd.add_argument("--config", default=argparse.SUPPRESS, help="YAML settings file (as before the command)")
        cmd.add_argument("--data-dir", default=argparse.SUPPRESS, help="root of local stores (as before the command)")
        cmd.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from features.spool import SpoolLocked
    from features.store import StoreUnavailable

    try:
        return args.fn(args)
    except SettingsError as e:
        print(f"aiobs: {e}", file=sys.stderr)
        return 2
    except SpoolLocked as e:  # one writer per data dir's spool: say so, no traceback
        print(f"aiobs: {e}: another aiobs process (a `direct`, `import`, `live` or `bentoml serve`) writes this data "
              f"dir's feature log; wait for it, or give this command its own --data-dir", file=sys.stderr)
        return 1
    except StoreUnavailable as e:  # the feature log cannot be opened (server down, chDB in use): say so, no traceback
        print(f"aiobs: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `aiobs tables | head -1`: the reader is gone, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0


if __name__ == "__main__":
    sys.exit(main())
