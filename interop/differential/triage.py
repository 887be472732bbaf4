"""Sort the differences a live run saved (target/differential/diff-*.json) into the deliberate
differences the README lists, so that only the ones in no category need a look.

Each category is a test on the first differing step and the two brokers' events there; the
names are the README's table rows. `difftool.py triage` prints a count per category and every
difference that fits none.
"""

import json


def _text(events):
    return json.dumps(events)


def _step_data(step):
    return (step or {}).get("data", "") if isinstance(step, dict) else ""


# (name, test(step, rabbitmq events, leveret events) -> bool), first match wins.
CATEGORIES = [
    ("a body frame larger than the announced body size",
     lambda s, r, lv: "content body exceeds announced size" in _text(lv)),
    ("a content header whose table has an unknown field type",
     lambda s, r, lv: "malformed content header" in _text(lv)),
    ("an unknown class or method",
     lambda s, r, lv: "COMMAND_INVALID - unknown method" in _text(lv)),
    ("an unknown x-queue-type on a server-named queue",
     lambda s, r, lv: "INTERNAL_ERROR" in _text(r) and "queue type" in _text(lv)),
    ("an invalid x-queue-master-locator",
     lambda s, r, lv: "INTERNAL_ERROR" in _text(r) and "x-queue-master-locator" in _text(s)),
    ("the AMQP 0-8 protocol header",
     lambda s, r, lv: (s or {}).get("op") == "connect" and '"version_major": 8' in _text(r)),
    ("an exchange name that is not UTF-8, in a 404 text",
     lambda s, r, lv: '"hex"' in _text(r) and "NOT_FOUND" in _text(lv)),
    ("a truncated basic.publish method",
     lambda s, r, lv: "FRAME_ERROR - cannot decode" in _text(lv) and "UNEXPECTED_FRAME" in _text(r)),
    ("x-delivery-count on quorum-queue deliveries (issue 16)",
     lambda s, r, lv: "x-delivery-count" in _text(r) and "x-delivery-count" not in _text(lv)),
]


def category(diff):
    """The category of one saved difference, or None."""
    i = diff.get("step", 0)
    steps = diff.get("steps", [])
    step = steps[i] if i < len(steps) else None
    r = diff.get("rabbitmq_trace", [])
    lv = diff.get("leveret_trace", [])
    a = r[i] if i < len(r) else None
    b = lv[i] if i < len(lv) else None
    for name, test in CATEGORIES:
        if test(step, a, b):
            return name
    return None
