#!/usr/bin/env python3
"""The HTTP API half of the differential check: the same state set up on RabbitMQ and Leveret
over AMQP, the same GETs against both management APIs, and the JSON compared field by field.

  httpdiff.py --rabbitmq 127.0.0.1:5672 --rabbitmq-http 127.0.0.1:15672 \
              --leveret 127.0.0.1:5673 --leveret-http 127.0.0.1:15673 [--json OUT]

What counts as a difference, per endpoint (objects are matched by name, not position):
- a field RabbitMQ sends that Leveret does not ("missing"): clients read them;
- a field whose JSON type differs (a number where RabbitMQ sends a string);
- for fields that say what an object is (names, flags, arguments, counts, client properties,
  states), a different value.
Fields Leveret sends and RabbitMQ does not are listed as "extra", for information. Rates,
timestamps, memory and other measurements are compared by type only.

Exit status 1 when anything is missing or mistyped, so it can gate a change.
"""

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runner import Runner  # noqa: E402

VHOST = "differential-http"

# Values compared as well as types: what an object is, not how busy it has been.
IDENTITY = {
    "name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "type", "internal",
    "consumers", "messages", "messages_ready", "messages_unacknowledged", "state", "user",
    "protocol", "client_properties", "auth_mechanism", "ssl", "number",
    "prefetch_count", "global_prefetch_count", "confirm", "transactional", "consumer_count",
    "consumer_tag", "ack_required", "source", "destination", "destination_type",
    "routing_key", "properties_key", "tags", "configure", "write", "read", "frame_max",
    "channel_max", "timeout", "policy", "active", "status",
    "reason", "product_name", "product_version", "rabbitmq_version", "management_version",
}


# Lists describing the broker's build (Erlang applications, plugins' mechanisms): compared by
# shape, not by their members.
INFORMATIONAL_LISTS = (".applications", ".auth_mechanisms", ".contexts", ".enabled_plugins",
                       ".log_files", ".exchange_types")


def request(http, path, method="GET", body=None):
    auth = "Basic " + base64.b64encode(b"guest:guest").decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{http[0]}:{http[1]}{path}", data=data, method=method,
                                 headers={"Authorization": auth,
                                          "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, raw.decode(errors="replace")


def setup(broker, http):
    """The same objects on both brokers, with a connection, channels and a consumer left open."""
    request(http, f"/api/vhosts/{urllib.parse.quote(VHOST, safe='')}", "DELETE")
    request(http, f"/api/vhosts/{VHOST}", "PUT", {})
    request(http, f"/api/permissions/{VHOST}/guest", "PUT",
            {"configure": ".*", "write": ".*", "read": ".*"})
    request(http, f"/api/topic-permissions/{VHOST}/guest", "PUT",
            {"exchange": "amq.topic", "write": "^a", "read": ".*"})
    request(http, f"/api/vhost-limits/{VHOST}/max-queues", "PUT", {"value": 500})
    request(http, "/api/users/diff-noperm", "PUT", {"password": "p", "tags": ""})
    request(http, "/api/user-limits/diff-noperm/max-channels", "PUT", {"value": 20})
    request(http, "/api/global-parameters/cluster_tags", "PUT",
            {"value": {"region": "differential"}})
    r = Runner(*broker, quiet=0.05, vhost=VHOST)
    props = [["product", ["S", "differential"]], ["version", ["S", "1.0"]],
             ["connection_name", ["S", "diff-http"]],
             ["capabilities", ["F", [["publisher_confirms", ["t", True]],
                                     ["consumer_cancel_notify", ["t", True]]]]]]
    steps = [
        {"op": "connect", "c": 0, "client_properties": props},
        {"op": "open", "c": 0, "ch": 1}, {"op": "open", "c": 0, "ch": 2},
        {"op": "method", "c": 0, "ch": 1, "name": "exchange.declare",
         "args": {"exchange": "hx", "type": "topic", "durable": True,
                  "arguments": [["alternate-exchange", ["S", "hae"]]]}},
        {"op": "method", "c": 0, "ch": 1, "name": "queue.declare",
         "args": {"queue": "hq", "durable": True,
                  "arguments": [["x-max-length", ["I", 100]], ["x-message-ttl", ["I", 600000]]]}},
        {"op": "method", "c": 0, "ch": 1, "name": "queue.declare",
         "args": {"queue": "hq2", "auto_delete": False}},
        {"op": "method", "c": 0, "ch": 1, "name": "queue.declare",
         "args": {"queue": "hqq", "durable": True,
                  "arguments": [["x-queue-type", ["S", "quorum"]]]}},
        {"op": "method", "c": 0, "ch": 1, "name": "queue.bind",
         "args": {"queue": "hq", "exchange": "hx", "routing_key": "a.#"}},
        {"op": "publish", "c": 0, "ch": 1, "args": {"exchange": "hx", "routing_key": "a.b"},
         "props": {"delivery_mode": 2}, "body": "one"},
        {"op": "publish", "c": 0, "ch": 1, "args": {"exchange": "", "routing_key": "hq2"},
         "props": {}, "body": "two"},
        {"op": "method", "c": 0, "ch": 2, "name": "basic.qos",
         "args": {"prefetch_count": 5, "global": False}},
        {"op": "method", "c": 0, "ch": 2, "name": "confirm.select", "args": {}},
        {"op": "method", "c": 0, "ch": 2, "name": "basic.consume",
         "args": {"queue": "hq2", "consumer_tag": "hct", "arguments": []}},
    ]
    for step in steps:
        r.events = []
        r.run_step(step)
    return r


def kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def key_of(obj):
    if not isinstance(obj, dict):
        return None
    for k in ("name", "consumer_tag", "properties_key", "user", "protocol", "node"):
        if k in obj and isinstance(obj[k], (str, int)):
            extra = obj.get("vhost", "") if k != "vhost" else ""
            return f"{k}={obj[k]}@{extra}"
    return None


def own(value):
    """Only this check's vhost, in listings that span vhosts."""
    if isinstance(value, list):
        return [x for x in value if not (isinstance(x, dict) and "vhost" in x
                                         and x["vhost"] != VHOST)]
    return value


def compare(path, a, b, out, depth=0):
    """Walk RabbitMQ's value `a` against Leveret's `b`."""
    identity = IDENTITY if not path.startswith("/api/overview.") else {
        "product_name", "product_version", "rabbitmq_version", "management_version"}
    if kind(a) != kind(b):
        out.append(("mistyped", path, f"{kind(a)} vs {kind(b)}"))
        return
    if isinstance(a, dict):
        for k, v in a.items():
            if k not in b:
                out.append(("missing", f"{path}.{k}", kind(v)))
                continue
            if k in identity and not isinstance(v, (dict, list)) and v != b[k]:
                out.append(("value", f"{path}.{k}", f"{v!r} vs {b[k]!r}"))
            elif k in ("arguments", "client_properties", "tags") and v != b[k]:
                out.append(("value", f"{path}.{k}", f"{json.dumps(v)} vs {json.dumps(b[k])}"))
            else:
                compare(f"{path}.{k}", v, b[k], out, depth + 1)
        for k in b:
            if k not in a:
                out.append(("extra", f"{path}.{k}", kind(b[k])))
    elif isinstance(a, list) and a and all(isinstance(x, dict) for x in a):
        bk = {key_of(x): x for x in b if isinstance(x, dict)}
        for x in a:
            k = key_of(x)
            if k is None:
                if b:
                    compare(f"{path}[0]", x, b[0], out, depth + 1)
                elif not path.endswith(INFORMATIONAL_LISTS):
                    out.append(("value", path, f"{len(a)} items vs none"))
                break
            if k in bk:
                compare(f"{path}[{k}]", x, bk[k], out, depth + 1)
            elif not path.endswith(INFORMATIONAL_LISTS):
                out.append(("value", f"{path}[{k}]", "absent from Leveret's list"))


CONNECTION_NAME = __import__("re").compile(r"[0-9a-f.:\[\]]+:\d+ -> [0-9a-f.:\[\]]+:\d+")


def normalise_node(value, node):
    if isinstance(value, str):
        return CONNECTION_NAME.sub("CONNECTION", value.replace(node, "NODE"))
    if isinstance(value, list):
        return [normalise_node(v, node) for v in value]
    if isinstance(value, dict):
        return {k.replace(node, "NODE"): normalise_node(v, node) for k, v in value.items()}
    return value


def endpoints(http, node):
    v = urllib.parse.quote(VHOST, safe="")
    paths = [
        "/api/overview", "/api/nodes", f"/api/nodes/{node}", "/api/connections",
        f"/api/vhosts/{v}/connections", "/api/channels", "/api/consumers",
        f"/api/consumers/{v}", "/api/exchanges", f"/api/exchanges/{v}", f"/api/exchanges/{v}/hx",
        f"/api/exchanges/{v}/hx/bindings/source", "/api/queues", f"/api/queues/{v}",
        f"/api/queues/{v}/hq", f"/api/queues/{v}/hq/bindings", "/api/bindings",
        f"/api/bindings/{v}", "/api/vhosts", f"/api/vhosts/{v}", "/api/users",
        "/api/users/guest", "/api/whoami", "/api/permissions", "/api/healthchecks/node",
        f"/api/healthchecks/node/{node}", "/api/health/checks/alarms",
        "/api/health/checks/local-alarms", f"/api/aliveness-test/{v}", "/api/cluster-name",
        "/api/extensions", "/api/policies", "/api/parameters", "/api/global-parameters",
        "/api/feature-flags", "/api/vhost-limits", "/api/auth",
        "/api/topic-permissions", f"/api/topic-permissions/{v}/guest",
        "/api/users/guest/topic-permissions", f"/api/vhosts/{v}/topic-permissions",
        "/api/users/without-permissions", "/api/user-limits", "/api/user-limits/diff-noperm",
        "/api/connections/username/guest", f"/api/definitions/{v}", f"/api/vhost-limits/{v}",
        "/api/parameters/vhost-limits", f"/api/parameters/vhost-limits/{v}",
        f"/api/parameters/vhost-limits/{v}/limits", "/api/global-parameters/cluster_tags",
        "/api/health/checks/protocol-listener/amqp", "/api/health/checks/virtual-hosts",
        "/api/health/checks/node-is-quorum-critical",
        "/api/health/checks/node-is-mirror-sync-critical",
        "/api/health/checks/certificate-expiration/1/months",
    ]
    return paths


# Requests that change or refuse something, sent to both brokers in this order; the status
# and body of each are compared as the GETs' are. Paths take {v} for the test vhost.
WRITES = [
    ("PUT", "/api/topic-permissions/{v}/guest", {"exchange": "amq.topic"}),
    ("PUT", "/api/topic-permissions/{v}/guest", {"write": "x"}),
    ("PUT", "/api/topic-permissions/no-such-vhost/guest",
     {"exchange": "amq.topic", "write": "^a", "read": ".*"}),
    ("PUT", "/api/topic-permissions/{v}/guest", {"exchange": "x2", "write": "", "read": ""}),
    ("DELETE", "/api/topic-permissions/{v}/guest/x2", None),
    ("DELETE", "/api/topic-permissions/{v}/guest/x2", None),
    ("GET", "/api/topic-permissions/{v}/no-such-user", None),
    ("PUT", "/api/user-limits/guest/max-queues", {"value": 20}),
    ("PUT", "/api/user-limits/no-such-user/max-channels", {"value": 20}),
    ("PUT", "/api/user-limits/guest/max-channels", {"value": "x"}),
    ("PUT", "/api/user-limits/guest/max-channels", {}),
    ("GET", "/api/user-limits/no-such-user", None),
    ("PUT", "/api/users/diff-bulk-1", {"password": "p", "tags": ""}),
    ("POST", "/api/users/bulk-delete", {}),
    ("POST", "/api/users/bulk-delete", {"users": ["diff-bulk-1", "no-such-user"]}),
    ("GET", "/api/users/diff-bulk-1", None),
    ("PUT", "/api/parameters/federation-upstream/{v}/up1", {"value": {"uri": "amqp://x"}}),
    ("PUT", "/api/parameters/vhost-limits/{v}/limits", {"value": {"max-bogus": 5}}),
    ("PUT", "/api/parameters/vhost-limits/no-such-vhost/limits", {"value": {"max-queues": 5}}),
    ("PUT", "/api/parameters/vhost-limits/{v}/limits", {"value": {"max-queues": 400}}),
    ("GET", "/api/vhost-limits/{v}", None),
    ("GET", "/api/parameters/nonsense/{v}", None),
    ("PUT", "/api/global-parameters/diff-x", {"name": "diff-x"}),
    ("PUT", "/api/global-parameters/diff-x", {"value": [1, "two"]}),
    ("GET", "/api/global-parameters/diff-x", None),
    ("DELETE", "/api/global-parameters/diff-x", None),
    ("DELETE", "/api/global-parameters/diff-x", None),
    ("PUT", "/api/cluster-name", {}),
    ("GET", "/api/health/checks/port-listener/abc", None),
    ("GET", "/api/health/checks/port-listener/5999", None),
    ("GET", "/api/health/checks/protocol-listener/mqtt", None),
    ("GET", "/api/health/checks/certificate-expiration/1/bogus", None),
    ("GET", "/api/definitions/no-such-vhost", None),
    ("POST", "/api/definitions/{v}",
     {"queues": [{"name": "hq-imported", "durable": True, "auto_delete": False,
                  "arguments": {}}]}),
    ("GET", "/api/queues/{v}/hq-imported", None),
    ("POST", "/api/rebalance/queues", None),
    ("DELETE", "/api/connections/username/no-such-user", None),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rabbitmq", default="127.0.0.1:5672")
    p.add_argument("--rabbitmq-http", default="127.0.0.1:15672")
    p.add_argument("--leveret", default="127.0.0.1:5673")
    p.add_argument("--leveret-http", default="127.0.0.1:15673")
    p.add_argument("--json")
    p.add_argument("--show-extra", action="store_true")
    args = p.parse_args()
    addr = lambda t: (t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1]))  # noqa: E731
    sides = [(addr(args.rabbitmq), addr(args.rabbitmq_http)),
             (addr(args.leveret), addr(args.leveret_http))]
    runners = [setup(amqp, http) for amqp, http in sides]
    time.sleep(6)  # let both sample rates and stats once
    nodes = [request(http, "/api/overview")[1]["node"] for _, http in sides]
    # Leveret's connection names follow its own peer port; match connections by connection_name.
    findings = []
    for path in endpoints(sides[0][1], nodes[0]):
        lpath = path.replace(nodes[0], nodes[1])
        a = request(sides[0][1], path)
        b = request(sides[1][1], lpath)
        if a[0] != b[0]:
            findings.append(("status", path, f"{a[0]} vs {b[0]}"))
            continue
        ra, rb = own(normalise_node(a[1], nodes[0])), own(normalise_node(b[1], nodes[1]))
        for obj in (ra, rb):
            for item in (obj if isinstance(obj, list) else [obj]):
                if isinstance(item, dict) and "client_properties" in item and "name" in item:
                    item["name"] = "CONNECTION"
                if isinstance(item, dict) and isinstance(item.get("connection_details"), dict):
                    item["connection_details"]["name"] = "CONNECTION"
        compare(path, ra, rb, findings)
    v = urllib.parse.quote(VHOST, safe="")
    for method, path, body in WRITES:
        path = path.replace("{v}", v)
        a = request(sides[0][1], path, method, body)
        b = request(sides[1][1], path, method, body)
        label = f"{method} {path}"
        if a[0] != b[0]:
            findings.append(("status", label, f"{a[0]} vs {b[0]}"))
            continue
        compare(label, own(normalise_node(a[1], nodes[0])), own(normalise_node(b[1], nodes[1])),
                findings)
    for _, http in sides:
        request(http, "/api/users/diff-noperm", "DELETE")
        request(http, "/api/global-parameters/cluster_tags", "DELETE")
    for r in runners:
        for conn in r.conns.values():
            if conn.alive:
                conn.closing = True
                r.lost(conn, "end")
    shown = [f for f in findings if f[0] != "extra" or args.show_extra]
    for what, path, detail in shown:
        print(f"{what:9} {path}: {detail}")
    counts = {}
    for f in findings:
        counts[f[0]] = counts.get(f[0], 0) + 1
    print(f"{len(endpoints(None, nodes[0]))} endpoints and {len(WRITES)} writes: " +
          ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(findings, f, indent=1)
    return 1 if any(f[0] in ("missing", "mistyped", "status", "value") for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
