#!/usr/bin/env python3
"""Read one interop suite's log and say how it went.

    summarize.py --suite NAME --format pytest|tap|cargo|gotest --log LOG --exit-code N
                 [--expected interop/expected-failures.txt] [--totals FILE]

Prints `NAME: N passed, N failed, N skipped`, then one indented line per failing test and per
skip reason the log gives. Exits 0 when the suite passed: its command exited 0, or every test
that failed is listed for this suite in the expected-failures file (each with its reason). A log
in which no test ran at all is a failure whatever the exit code.
"""
import argparse
import re
import sys


class Result:
    """What a log says: counts, the failing tests' names, skip reasons, and whether the run
    finished (a crashed or cut-short run must not pass on the strength of its expected failures)."""

    def __init__(self, passed, failed, skipped, failures, skips, complete):
        self.passed, self.failed, self.skipped = passed, failed, skipped
        self.failures, self.skips, self.complete = failures, skips, complete


def parse_pytest(text):
    passed = failed = skipped = 0
    complete = False
    for line in text.splitlines():
        if re.search(r"\b(passed|failed|skipped|error)s?\b.* in [0-9.]+s", line):
            complete = True
            passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", line)) else 0
            failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|errors?)\b", line))
            skipped = int(m.group(1)) if (m := re.search(r"(\d+) skipped", line)) else 0
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    skips = re.findall(r"^SKIPPED \[\d+\] (.*)$", text, re.M)
    return Result(passed, failed, skipped, failures, skips, complete)


def parse_tap(text):
    """node --test's TAP: nested `# Subtest:` lines name the path of each result line."""
    def summary(key):
        m = re.search(rf"^# {key} (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0

    lines = text.splitlines()
    path, failures, skips = [], [], []
    for i, line in enumerate(lines):
        if m := re.match(r"^(\s*)# Subtest: (.*)$", line):
            depth = len(m.group(1)) // 4
            path = path[:depth] + [m.group(2)]
            continue
        m = re.match(r"^(\s*)(ok|not ok) \d+ - (.*?)(?: # (SKIP|TODO)\b(.*))?$", line)
        if not m:
            continue
        depth = len(m.group(1)) // 4
        name = " > ".join(path[:depth] + [m.group(3)])
        block = []
        for following in lines[i + 1:]:
            block.append(following)
            if following.strip() == "...":
                break
        if any("type: 'suite'" in b or "failureType: 'subtestsFailed'" in b for b in block):
            continue
        if m.group(2) == "not ok":
            failures.append(name)
        elif m.group(4) == "SKIP":
            skips.append(f"{name}:{m.group(5)}")
    failed = summary("fail") + summary("cancelled")
    complete = re.search(r"^# tests \d+$", text, re.M) is not None and summary("cancelled") == 0
    return Result(summary("pass"), failed, summary("skipped"), failures, skips, complete)


def parse_cargo(text):
    passed = failed = skipped = 0
    for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", text):
        passed += int(m.group(1))
        failed += int(m.group(2))
        skipped += int(m.group(3))
    failures, binary = [], "?"
    for line in text.splitlines():
        if m := re.match(r"^\s*Running (\S+)", line):
            binary = m.group(1)
        elif m := re.match(r"^test (\S+) \.\.\. FAILED$", line):
            failures.append(f"{binary}::{m.group(1)}")
    skips = [
        f"{name} (ignored{reason})"
        for name, reason in re.findall(r"^test (\S+) \.\.\. ignored(, .*)?$", text, re.M)
    ]
    # With --no-fail-fast every test binary reports, failing or not.
    binaries = len(re.findall(r"^\s*Running ", text, re.M))
    results = len(re.findall(r"test result: ", text))
    return Result(passed, failed, skipped, failures, skips, binaries > 0 and binaries == results)


def parse_gotest(text):
    """`go test -v`: leaf tests only (a parent of subtests reports again what they did)."""
    lines = text.splitlines()
    status = {}
    reasons = {}
    for i, line in enumerate(lines):
        if m := re.match(r"^\s*--- (PASS|FAIL|SKIP): (\S+)", line):
            status[m.group(2)] = m.group(1)
            if m.group(1) == "SKIP" and i + 1 < len(lines):
                reasons[m.group(2)] = lines[i + 1].strip()
    leaves = {n: st for n, st in status.items() if not any(o.startswith(n + "/") for o in status)}
    failures = [n for n, st in leaves.items() if st == "FAIL"]
    skips = [f"{n}: {reasons.get(n, '')}" for n, st in leaves.items() if st == "SKIP"]
    passed = sum(1 for st in leaves.values() if st == "PASS")
    # A panic, a -timeout, or goleak's check in TestMain ends the run without a FAIL line.
    aborted = re.search(r"^panic: |^goleak: |test timed out after", text, re.M)
    finished = re.search(r"^(ok|FAIL)\s+\S+\s+[0-9.]+s$", text, re.M)
    return Result(passed, len(failures), len(skips), failures, skips, bool(finished) and not aborted)


PARSERS = {"pytest": parse_pytest, "tap": parse_tap, "cargo": parse_cargo, "gotest": parse_gotest}


def expected_failures(path, suite):
    """`suite | test | reason` lines; `#` starts a comment."""
    expected = {}
    if not path:
        return expected
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split(" | ")]
            if len(parts) != 3 or not all(parts):
                sys.exit(f"{path}: expected 'suite | test | reason', got: {line}")
            if parts[0] == suite:
                expected[parts[1]] = parts[2]
    return expected


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--format", required=True, choices=PARSERS)
    ap.add_argument("--log", required=True)
    ap.add_argument("--exit-code", type=int, required=True)
    ap.add_argument("--expected")
    ap.add_argument("--totals")
    args = ap.parse_args()

    with open(args.log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    r = PARSERS[args.format](text)
    expected = expected_failures(args.expected, args.suite)

    print(f"{args.suite}: {r.passed} passed, {r.failed} failed, {r.skipped} skipped")
    for name in r.failures:
        reason = expected.get(name)
        print(f"  failed: {name}" + (f" (expected: {reason})" if reason else ""))
    for skip in r.skips:
        print(f"  skipped: {skip}")
    if args.totals:
        with open(args.totals, "a", encoding="utf-8") as f:
            f.write(f"{r.passed} {r.failed} {r.skipped}\n")

    if r.passed + r.failed == 0:
        print(f"  no test ran: see {args.log}")
        return 1
    if args.exit_code == 0 and r.failed == 0:
        return 0
    if args.exit_code == 124 or not r.complete:
        print(f"  the run did not finish (exit {args.exit_code}): see {args.log}")
        return 1
    unexpected = [name for name in r.failures if name not in expected]
    if r.failures and not unexpected and len(r.failures) == r.failed:
        return 0
    if r.failed == 0:
        print(f"  exited {args.exit_code} with no failing test: see {args.log}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
