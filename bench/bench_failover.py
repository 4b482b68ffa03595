"""Failover benchmark (issue 13): chains firing every second, the primary stopped, its
streaming standby promoted; how soon the chains fire again, and duplicates / lost firings.

Each round builds a fresh primary and ``pg_basebackup`` standby on this machine (Unix
sockets), 20 chains ``* * * * * *``, engines on the primary's DSN, the standby's, and a
multi-host DSN with ``target_session_attrs=read-write`` (plus one started during the
outage), then stops the primary (``--modes``: ``fast`` = clean shutdown, ``immediate`` =
crash), waits ``--outage`` seconds, promotes the standby and compares the old primary's
history with the new one (tests/failover_scenario.py says what counts as what).

Baseline in the same round: a plain psycopg client on the multi-host DSN retrying every
10 ms from the start of ``pg_ctl promote`` until its first committed write. The ratio is
(promote start -> first chain run started) / (promote start -> that client's write).

    python bench/bench_failover.py [--bindir /usr/lib/postgresql/15/bin] [--rounds 3] [--modes fast,immediate]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.embedded import default_bindir, server_version  # noqa: E402
from tests.failover_scenario import run_failover  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bindir", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="promotions per mode")
    ap.add_argument("--modes", default="fast,immediate")
    ap.add_argument("--chains", type=int, default=20)
    ap.add_argument("--outage", type=float, default=3.0, help="seconds between the stop and the promotion")
    args = ap.parse_args()
    bindir = args.bindir or default_bindir()
    major, minor = server_version(bindir)
    print(f"PostgreSQL {major}.{minor}, {args.chains} chains every second, outage {args.outage:.0f} s, "
          f"{args.rounds} promotion(s) per mode")
    root = Path(tempfile.mkdtemp(prefix="pgtt-bench-failover-"))
    root.chmod(0o755)
    try:
        for mode in args.modes.split(","):
            results = []
            for i in range(args.rounds):
                res = run_failover(root / f"{mode}{i}", bindir, mode=mode, n_chains=args.chains,
                                   outage_s=args.outage)
                results.append(res)
                print(f"  round {i + 1}: {res.line()}")
                print(f"           baseline client write {res.client_write_s:.2f}s after promote start, "
                      f"first chain run {res.fire_from_promote_s:.2f}s: ratio "
                      f"{res.fire_from_promote_s / res.client_write_s:.1f}")
                shutil.rmtree(root / f"{mode}{i}", ignore_errors=True)
            tot = lambda attr: sum(getattr(r, attr) for r in results)  # noqa: E731
            print(f"{mode}: first firing after promotion median "
                  f"{statistics.median(r.first_fire_s for r in results):.2f}s (max "
                  f"{max(r.first_fire_s for r in results):.2f}s), all chains median "
                  f"{statistics.median(r.all_fire_s for r in results):.2f}s, every engine back max "
                  f"{max(max(r.engine_back_s.values()) for r in results):.2f}s; over "
                  f"{tot('due_instants')} due instants: {tot('executions')} executions, "
                  f"{tot('duplicates')} duplicates, {tot('lost_from_history')} lost from history, "
                  f"{tot('claimed_not_run')} claimed but never run, {tot('lost_firings')} lost firings, "
                  f"{tot('missed_by_policy')} missed in the outage (run_once), "
                  f"{tot('skipped')} skipped; ratio to the bare client median "
                  f"{statistics.median(r.fire_from_promote_s / r.client_write_s for r in results):.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
