"""The `aiobs` command line. Each sub-command is a thin front door onto the packages; no logic lives here."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from .settings import SettingsError, load_settings


def _settings(args):
    s = load_settings(args.config, data_dir=getattr(args, "data_dir", None))
    s.ensure_dirs()
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

    t = sub.add_parser("tables", help="create/migrate the feature-log tables and print their row counts")
    t.set_defaults(fn=cmd_tables)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except SettingsError as e:
        print(f"aiobs: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
