#!/usr/bin/env python3
"""The differential fuzzer: the same generated sessions against RabbitMQ and Leveret, diffed.

  difftool.py live   --seeds 0:1000 --rabbitmq H:P --leveret H:P [--jobs 8] [--out DIR] [--shrink]
  difftool.py record --seeds 0:300 --rabbitmq H:P --fixtures FILE
  difftool.py replay --fixtures FILE --leveret H:P [--pending FILE]
  difftool.py show   --seed N            (print the session's steps)

`live` runs each seed against both brokers and writes every difference (shrunk to the fewest
steps that still differ, with --shrink) to DIR. `record` stores RabbitMQ's traces, with the
steps, as fixtures; `replay` runs the fixtures' steps against Leveret alone and compares, so CI
needs no RabbitMQ. Seeds listed in the pending file (seed, then the reason) are reported but
do not fail the replay.
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gen  # noqa: E402
from runner import Runner, normalise  # noqa: E402


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def substitute(value, prefix):
    if isinstance(value, str):
        return value.replace("~", prefix)
    if isinstance(value, list):
        return [substitute(v, prefix) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, prefix) for k, v in value.items()}
    return value


# Each worker thread runs its sessions in its own vhost, made afresh for every session: sessions
# bind queues to the amq.* exchanges, and a queue another session left (an exclusive one whose
# connection is still closing, a durable server-named one) would route their messages.
_local = threading.local()
_vhosts_lock = threading.Lock()
_next_worker = [0]
HTTP = {}  # broker address -> its HTTP API address


def fresh_vhost(broker):
    if not hasattr(_local, "index"):
        with _vhosts_lock:
            _local.index = _next_worker[0]
            _next_worker[0] += 1
    name = f"differential-{_local.index}"
    make_vhost(HTTP[broker], name)
    return name


def make_vhost(http, name, attempts=5):
    """A fresh vhost: deleted first, so nothing an earlier run left can route a message.
    RabbitMQ sometimes fails to start a vhost created right after one of the same name was
    deleted (500 `failed_to_start_vhost_on_nodes`, its message store still going away): that
    is retried after a pause."""
    auth = "Basic " + base64.b64encode(b"guest:guest").decode()
    for attempt in range(attempts):
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"http://{http[0]}:{http[1]}/api/vhosts/{name}", method="DELETE",
                headers={"Authorization": auth}), timeout=10).read()
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
        try:
            for path, body in ((f"/api/vhosts/{name}", b"{}"),
                               (f"/api/permissions/{name}/guest",
                                b'{"configure":".*","write":".*","read":".*"}')):
                request = urllib.request.Request(
                    f"http://{http[0]}:{http[1]}{path}", data=body, method="PUT",
                    headers={"Authorization": auth, "content-type": "application/json"})
                urllib.request.urlopen(request, timeout=10).read()
            return
        except urllib.error.HTTPError as error:
            if error.code != 500 or attempt + 1 == attempts:
                raise RuntimeError(f"PUT on port {http[1]}: {error.code} "
                                   f"{error.read()[:300]!r}") from error
            time.sleep(1)


def run_session(broker, steps, quiet):
    prefix = "d" + uuid.uuid4().hex[:10] + "-"
    vhost = fresh_vhost(broker)
    trace = Runner(*broker, quiet=quiet, vhost=vhost).run(substitute(steps, prefix))
    return normalise(trace, prefix, vhost)


def first_difference(a, b):
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            return i
    return None


def differs(rabbit, leveret, steps, quiet, tries=2):
    """The first differing step, if the difference shows on every one of `tries` runs (a
    timing-dependent difference that comes and goes is reported as flaky, not as a finding)."""
    index = None
    for _ in range(tries):
        a = run_session(rabbit, steps, quiet)
        b = run_session(leveret, steps, quiet)
        i = first_difference(a, b)
        if i is None:
            return None, a, b
        index = i if index is None else min(index, i)
    return index, a, b


def shrink(rabbit, leveret, steps, quiet):
    """Drop chunks of steps (never the first connects) while the session still differs."""
    steps = list(steps)
    chunk = max(len(steps) // 2, 1)
    while chunk >= 1:
        i = 0
        changed = False
        while i < len(steps):
            candidate = steps[:i] + steps[i + chunk:]
            if candidate and candidate[0]["op"] == "connect":
                index, _, _ = differs(rabbit, leveret, candidate, quiet, tries=1)
                if index is not None:
                    steps = candidate
                    changed = True
                    continue
            i += chunk
        if not changed:
            chunk //= 2
    # cut the tail after the first difference
    index, _, _ = differs(rabbit, leveret, steps, quiet, tries=1)
    if index is not None:
        steps = steps[:index + 1]
    return steps


def set_http(args):
    HTTP[addr(args.rabbitmq)] = addr(args.rabbitmq_http)
    HTTP[addr(args.leveret)] = addr(args.leveret_http)


def cmd_live(args):
    rabbit, leveret = addr(args.rabbitmq), addr(args.leveret)
    if args.seed_file:
        seeds = [int(line.split()[0]) for line in open(args.seed_file) if line.strip()]
    else:
        lo, hi = map(int, args.seeds.split(":"))
        seeds = range(lo, hi)
    os.makedirs(args.out, exist_ok=True)
    found = []
    started = time.monotonic()

    def one(seed):
        steps = gen.session(seed)
        index, a, b = differs(rabbit, leveret, steps, args.quiet, tries=1)
        if index is None:
            return None
        # Confirm it is not timing: once more.
        index, a, b = differs(rabbit, leveret, steps, args.quiet, tries=1)
        if index is None:
            return (seed, "flaky", None)
        if args.shrink:
            steps = shrink(rabbit, leveret, steps, args.quiet)
            index, a, b = differs(rabbit, leveret, steps, args.quiet, tries=1)
            if index is None:
                return (seed, "flaky", None)
        report = {"seed": seed, "step": index, "steps": steps, "rabbitmq": a[index] if index < len(a) else None,
                  "leveret": b[index] if index < len(b) else None,
                  "rabbitmq_trace": a, "leveret_trace": b}
        with open(os.path.join(args.out, f"diff-{seed}.json"), "w") as f:
            json.dump(report, f, indent=1)
        return (seed, "differs", index)

    done = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(one, seeds):
            done += 1
            if result:
                found.append(result)
                seed, what, index = result
                print(f"seed {seed}: {what}" + (f" at step {index}" if index is not None else ""),
                      flush=True)
    differing = [f for f in found if f[1] == "differs"]
    print(f"{done} sessions in {time.monotonic() - started:.0f}s: {len(differing)} differ, "
          f"{len(found) - len(differing)} flaky")
    return 1 if differing else 0


def cmd_record(args):
    rabbit = addr(args.rabbitmq)
    lo, hi = map(int, args.seeds.split(":"))

    def one(seed):
        steps = gen.session(seed)
        a = run_session(rabbit, steps, args.quiet)
        b = run_session(rabbit, steps, args.quiet)
        if a != b:
            return None  # RabbitMQ itself does not repeat: no fixture for this seed
        return {"seed": seed, "steps": steps, "trace": a}

    kept = skipped = 0
    with ThreadPoolExecutor(args.jobs) as pool, open(args.fixtures, "w") as out:
        for result in pool.map(one, range(lo, hi)):
            if result is None:
                skipped += 1
                continue
            kept += 1
            out.write(json.dumps(result, separators=(",", ":")) + "\n")
    print(f"recorded {kept} sessions ({skipped} seeds skipped: RabbitMQ's own runs differed)")


def load_pending(path):
    pending = {}
    if path and os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line and not line.startswith("#"):
                seed, _, reason = line.partition(" ")
                pending[int(seed)] = reason.strip()
    return pending


def cmd_replay(args):
    leveret = addr(args.leveret)
    pending = load_pending(args.pending)
    fixtures = [json.loads(line) for line in open(args.fixtures)]
    started = time.monotonic()

    def one(fx):
        b = run_session(leveret, fx["steps"], args.quiet)
        i = first_difference(fx["trace"], b)
        if i is not None:
            # A difference must show twice: the second run rules out a timing accident.
            b = run_session(leveret, fx["steps"], args.quiet)
            i = first_difference(fx["trace"], b)
        return fx, i, b

    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for fx, i, b in pool.map(one, fixtures):
            if i is None:
                if fx["seed"] in pending:
                    print(f"seed {fx['seed']}: now matches RabbitMQ; remove it from the pending list")
                continue
            if fx["seed"] in pending:
                print(f"seed {fx['seed']}: differs at step {i} (pending: {pending[fx['seed']]})")
                continue
            failed += 1
            print(f"seed {fx['seed']}: differs at step {i}: {json.dumps(fx['steps'][i])}")
            print(f"  rabbitmq: {json.dumps(fx['trace'][i] if i < len(fx['trace']) else None)}")
            print(f"  leveret:  {json.dumps(b[i] if i < len(b) else None)}")
    print(f"replayed {len(fixtures)} sessions against Leveret in {time.monotonic() - started:.0f}s: "
          f"{failed} differ from RabbitMQ's recorded traces")
    return 1 if failed else 0


def cmd_triage(args):
    """Count the saved differences of a live run by deliberate category; list the rest."""
    import glob
    from triage import category
    counts, unknown = {}, []
    for path in sorted(glob.glob(os.path.join(args.out, "diff-*.json"))):
        with open(path) as f:
            diff = json.load(f)
        name = category(diff)
        if name is None:
            unknown.append((diff.get("seed"), diff.get("step")))
        else:
            counts[name] = counts.get(name, 0) + 1
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"{n:6}  {name}")
    for seed, step in unknown:
        print(f"  in no category: seed {seed}, step {step}")
    print(f"{sum(counts.values()) + len(unknown)} differences, {len(unknown)} in no category")
    return 1 if unknown else 0


def cmd_show(args):
    for i, step in enumerate(gen.session(args.seed)):
        print(i, json.dumps(step))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("live", "record", "replay", "show", "triage"):
        s = sub.add_parser(name)
        s.add_argument("--seeds", default="0:100")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--rabbitmq", default="127.0.0.1:5672")
        s.add_argument("--leveret", default="127.0.0.1:5673")
        s.add_argument("--rabbitmq-http", default="127.0.0.1:15672")
        s.add_argument("--leveret-http", default="127.0.0.1:15673")
        s.add_argument("--jobs", type=int, default=8)
        s.add_argument("--quiet", type=float, default=0.03)
        s.add_argument("--out", default="target/differential")
        s.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "fixtures.jsonl"))
        s.add_argument("--pending", default=os.path.join(os.path.dirname(__file__), "pending.txt"))
        s.add_argument("--shrink", action="store_true")
        s.add_argument("--seed-file", help="live: the seeds to run, one per line (first field)")
    args = p.parse_args()
    set_http(args)
    return {"live": cmd_live, "record": cmd_record, "replay": cmd_replay, "show": cmd_show, "triage": cmd_triage}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
