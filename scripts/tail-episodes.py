#!/usr/bin/env python3
"""Where a load run's p99 came from: the messages at or above it, grouped into episodes, and
what the machine did meanwhile.

A closed-loop load (20 pairs x 8 in flight) puts its p99 in a few episodes in which every
message in flight waits at once; the question is what stalled. Inputs:

- TRACE: a file the Node load generator writes when run with LATENCY_TRACE=DIR
  (mesh/interop/node-load.mjs): each counted message's latency and ack time on
  CLOCK_MONOTONIC, and the generator's GC pauses.
- --sched FILE (optional): `perf sched timehist -i perf.data` output of a
  `perf sched record -k CLOCK_MONOTONIC -a` taken during the run, for who ran and who waited.

Example (docs/mesh-server.md, "Eleventh round"):
    mkdir -p /tmp/tr
    LATENCY_TRACE=/tmp/tr scripts/bench-mesh.sh --load node --runs 1 --only-nsh
    # meanwhile, as root, once the generator (pgrep -f node-load.mjs) is 2 s past its start:
    perf sched record -k CLOCK_MONOTONIC -a -o /tmp/sched.data -- sleep 6
    # afterwards:
    perf sched timehist -i /tmp/sched.data > /tmp/timehist.txt
    scripts/tail-episodes.py /tmp/tr/trace-*.json --sched /tmp/timehist.txt

`--self-test` checks the grouping and attribution on made-up data (run by scripts/test.sh).
"""

import argparse
import io
import json
import re
import sys
from dataclasses import dataclass

# Messages sent this close together (ms) belong to one episode.
EPISODE_GAP_MS = 5.0
# A task waited for a CPU this long after its wake-up (ms): a stall worth naming.
NOTABLE_DELAY_MS = 0.2
# Another task ran this long (ms) on a CPU: worth naming.
NOTABLE_RUN_MS = 0.2
# A server round this long (ms) is worth naming.
LONG_SERVER_RUN_MS = 1.0

TIMEHIST_LINE = re.compile(
    r"^\s*(?P<time>\d+\.\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<task>.+?)\s+"
    r"(?P<wait>\d+\.\d+)\s+(?P<delay>\d+\.\d+)\s+(?P<run>\d+\.\d+)\s*$"
)
TASK = re.compile(r"^(?P<comm>.*)\[(?P<tid>\d+)(?:/(?P<pid>\d+))?\]$")


@dataclass
class Run:
    """One switch-out in `perf sched timehist`: a task ran [end - run_ms, end] on cpu."""

    end_ms: float
    cpu: int
    comm: str
    tid: int
    pid: int
    delay_ms: float
    run_ms: float

    @property
    def start_ms(self):
        return self.end_ms - self.run_ms


@dataclass
class Episode:
    first_sent_ms: float
    last_sent_ms: float
    messages: int
    max_latency_ms: float

    @property
    def until_ms(self):
        return self.last_sent_ms + self.max_latency_ms


def parse_timehist(lines):
    runs = []
    for line in lines:
        m = TIMEHIST_LINE.match(line)
        if not m:
            continue
        task = TASK.match(m["task"].strip())
        if not task:
            continue
        tid = int(task["tid"])
        runs.append(
            Run(
                end_ms=float(m["time"]) * 1000.0,
                cpu=int(m["cpu"]),
                comm=task["comm"],
                tid=tid,
                pid=int(task["pid"] or tid),
                delay_ms=float(m["delay"]),
                run_ms=float(m["run"]),
            )
        )
    return runs


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def episodes(sent_and_latency, threshold):
    """Messages with latency >= threshold, grouped by send time."""
    found = []
    for sent, latency in sorted(m for m in sent_and_latency if m[1] >= threshold):
        last = found[-1] if found else None
        if last and sent - last.last_sent_ms < EPISODE_GAP_MS:
            last.last_sent_ms = sent
            last.messages += 1
            last.max_latency_ms = max(last.max_latency_ms, latency)
        else:
            found.append(Episode(sent, sent, 1, latency))
    return found


def classify(run, generator_pid):
    """'generator', 'server', 'idle' or 'other' (kernel threads, perf, anything else)."""
    if run.pid == generator_pid:
        return "generator"
    if run.comm.startswith("<idle>") or run.comm.startswith("swapper"):
        return "idle"
    if run.comm.startswith(("nsh", "shard-", "tokio-")) or run.comm == "node":
        return "server"
    return "other"


def causes(episode, trace, runs):
    """What overlapped the episode: generator GC pauses, delayed or long server rounds, a
    delayed generator, other tasks taking a CPU."""
    lo, hi = episode.first_sent_ms, episode.until_ms
    found = []
    for gc in trace["gc_pauses"]:
        if gc["at_ms"] < hi and gc["at_ms"] + gc["ms"] > lo:
            found.append(("generator GC", f"{gc['ms']:.1f} ms pause (kind {gc['kind']})"))
    generator_pid = trace.get("pid")
    for run in runs:
        if not (run.start_ms - run.delay_ms < hi and run.end_ms > lo):
            continue
        kind = classify(run, generator_pid)
        if kind == "server" and run.delay_ms >= NOTABLE_DELAY_MS:
            found.append(("server waited for a CPU", f"{run.delay_ms:.1f} ms on cpu {run.cpu}"))
        elif kind == "server" and run.run_ms >= LONG_SERVER_RUN_MS:
            found.append(("long server round", f"{run.run_ms:.1f} ms on cpu {run.cpu}"))
        elif kind == "generator" and run.tid == generator_pid and run.delay_ms >= NOTABLE_DELAY_MS:
            # Its main thread: the event loop that sends, reads and acks.
            found.append(("generator waited for a CPU", f"{run.delay_ms:.1f} ms on cpu {run.cpu}"))
        elif kind == "other" and run.run_ms >= NOTABLE_RUN_MS:
            found.append(("other task", f"{run.comm} ran {run.run_ms:.1f} ms on cpu {run.cpu}"))
    return found


def report(trace, runs, out):
    latencies = trace["latency_ms"]
    sent = [acked - latency for acked, latency in zip(trace["acked_at_ms"], latencies)]
    messages = list(zip(sent, latencies))
    if runs:
        # Only the messages the scheduler trace covers.
        lo, hi = min(r.start_ms for r in runs), max(r.end_ms for r in runs)
        messages = [(s, lat) for s, lat in messages if s >= lo and s + lat <= hi]
    if not messages:
        print("no counted messages (in the scheduler trace's window)", file=out)
        return []
    ordered = sorted(lat for _, lat in messages)
    p99 = percentile(ordered, 0.99)
    quantiles = " ".join(
        f"{name} {percentile(ordered, q):.2f}"
        for name, q in [("p10", 0.1), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)]
    )
    print(f"{len(ordered)} messages: {quantiles} max {ordered[-1]:.2f} ms", file=out)
    # Times print from the scheduler trace's start, or else from the first message sent.
    origin = min(r.start_ms for r in runs) if runs else min(s for s, _ in messages)
    found = episodes(messages, p99)
    tally = {}
    for episode in found:
        why = causes(episode, trace, runs)
        first, last = episode.first_sent_ms - origin, episode.last_sent_ms - origin
        print(
            f"episode: sent {first:.1f}..{last:.1f} ms, {episode.messages} messages at or above "
            f"p99, up to {episode.max_latency_ms:.1f} ms",
            file=out,
        )
        for kind, detail in why:
            print(f"    {kind}: {detail}", file=out)
        for kind in {kind for kind, _ in why} or {"nothing named"}:
            tally[kind] = tally.get(kind, 0) + 1
    print(f"{len(found)} episodes; with each cause (an episode can have several):", file=out)
    for kind, count in sorted(tally.items(), key=lambda kv: -kv[1]):
        print(f"    {kind}: {count}", file=out)
    return found


def self_test():
    # Ten messages at 5 ms, then four sent close together that took 20 ms while the generator
    # paused for GC and a kernel thread held the server's CPU, then one more at 5 ms.
    latency = [5.0] * 10 + [20.0] * 4 + [5.0]
    sent = [1000.0 + 10 * i for i in range(10)] + [1200.0, 1201.0, 1202.0, 1203.0] + [1400.0]
    trace = {
        "pid": 42,
        "latency_ms": latency,
        "acked_at_ms": [s + lat for s, lat in zip(sent, latency)],
        "gc_pauses": [
            {"at_ms": 1210.0, "ms": 1.5, "kind": 1},
            {"at_ms": 1300.0, "ms": 1.0, "kind": 1},
        ],
    }
    timehist = """           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
       0.990000 [0000]  nsh[7]                              0.000      0.000      0.100
       1.205000 [0000]  kdamond.0[105]                    500.000      0.020      1.400
       1.206000 [0000]  nsh[7]                              1.000      1.300      0.300
       1.207000 [0001]  node[42]                            0.010      0.000     40.000
       1.208000 [0001]  node[43/42]                         0.010      0.000      0.010
       1.500000 [0000]  nsh[7]                              0.500      0.010      0.200
"""
    runs = parse_timehist(timehist.splitlines())
    assert len(runs) == 6, runs
    assert runs[4].pid == 42 and runs[4].tid == 43, runs[4]
    out = io.StringIO()
    found = report(trace, runs, out)
    assert [(e.messages, e.max_latency_ms) for e in found] == [(4, 20.0)], found
    assert "kdamond.0 ran 1.4 ms on cpu 0" in out.getvalue(), out.getvalue()
    why = causes(found[0], trace, runs)
    kinds = sorted(kind for kind, _ in why)
    assert kinds == ["generator GC", "other task", "server waited for a CPU"], why
    assert classify(runs[3], 42) == "generator" and classify(runs[0], 42) == "server"
    print("tail-episodes: self-test passed")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trace", nargs="*", help="trace-*.json files from LATENCY_TRACE")
    parser.add_argument("--sched", help="`perf sched timehist` output covering the run")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.trace:
        parser.error("give a trace file (LATENCY_TRACE=DIR on the Node load generator writes them)")
    runs = []
    if args.sched:
        with open(args.sched) as f:
            runs = parse_timehist(f)
        if not runs:
            sys.exit(f"--sched {args.sched}: no `perf sched timehist` lines found; give its output")
    for path in args.trace:
        with open(path) as f:
            trace = json.load(f)
        print(f"== {path} ({trace.get('url', '?')})")
        report(trace, runs, sys.stdout)


if __name__ == "__main__":
    main()
