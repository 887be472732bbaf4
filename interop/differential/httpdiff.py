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
    ]
    return paths


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
    print(f"{len(endpoints(None, nodes[0]))} endpoints: " +
          ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(findings, f, indent=1)
    return 1 if any(f[0] in ("missing", "mistyped", "status", "value") for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
