"""Random AMQP 0-9-1 sessions, reproducible from a seed.

A session is two connections with up to three channels each, then a random walk over what
clients do: declares of every exchange type and of queues with valid and invalid x-arguments
(quorum queues included), binds and unbinds, publishes with random properties, typed header
tables, CC/BCC and mandatory, consumes with global and per-consumer prefetch, get, ack, nack,
reject (multiple, requeue, unknown tags), recover, confirm and tx modes, direct reply-to,
cancels, conditional deletes, closes, and deliberate protocol errors as raw frames. Some
sessions start with a handshake variant instead (protocol headers, mechanisms, bad logins,
tune values of 0).

Names carry `~`, which the runner replaces with a per-run prefix. Steps that act on a delivery
name it by position ("pick") in the channel's unsettled deliveries, resolved at run time.
"""

import random
import struct

from amqp import enc_table, enc_shortstr, frame, method_frame, header_frame, FRAME_BODY, \
    FRAME_HEARTBEAT, PROTOCOL_HEADER

QUEUES = ["~q0", "~q1", "~q2", "~dlq"]
EXCHANGES = ["~x0", "~x1", "~x2"]
BUILTIN = ["", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"]
KEYS = ["k0", "k1", "a.b", "a.*", "#", "*.b", "", "~q0", "~q1", "~q2"]
TYPES = ["direct", "fanout", "topic", "headers"]


def typed_same_value(r):
    """One value in one of the field types that carry it (headers matching across types)."""
    n = r.choice([0, 1, 2])
    return r.choice([
        ["b", n], ["B", n], ["s", n], ["u", n], ["I", n], ["i", n], ["l", n], ["T", n],
        ["S", str(n)], ["x", str(n)], ["t", n == 1], ["f", float(n)], ["d", float(n)],
        ["D", [0, n]], ["V", None],
    ])


def any_value(r, depth=0):
    choice = r.randrange(16 if depth < 2 else 13)
    return [
        lambda: ["t", r.random() < 0.5], lambda: ["b", r.randint(-128, 127)],
        lambda: ["B", r.randint(0, 255)], lambda: ["s", r.randint(-32768, 32767)],
        lambda: ["u", r.randint(0, 65535)], lambda: ["I", r.randint(-2**31, 2**31 - 1)],
        lambda: ["i", r.randint(0, 2**32 - 1)], lambda: ["l", r.randint(-2**63, 2**63 - 1)],
        lambda: ["f", 1.5], lambda: ["d", -2.25], lambda: ["D", [2, 12345]],
        lambda: ["S", r.choice(["text", "", "ünï", "~q1"])], lambda: ["T", 1700000000],
        lambda: ["A", [any_value(r, depth + 1) for _ in range(r.randrange(3))]],
        lambda: ["F", [[f"n{i}", any_value(r, depth + 1)] for i in range(r.randrange(3))]],
        lambda: ["x", "bytes"],
    ][choice]()


def queue_args(r, quorum_bias=0.1):
    args = []
    pool = [
        ("x-message-ttl", lambda: r.choice([["I", 100000], ["l", 0], ["S", "1000"], ["I", -1],
                                             ["l", 100000]])),
        ("x-expires", lambda: r.choice([["I", 600000], ["I", 0], ["S", "x"]])),
        ("x-max-length", lambda: r.choice([["I", 2], ["l", 0], ["I", -1], ["S", "2"]])),
        ("x-max-length-bytes", lambda: r.choice([["I", 20], ["l", 1000]])),
        ("x-overflow", lambda: r.choice([["S", "drop-head"], ["S", "reject-publish"],
                                         ["S", "reject-publish-dlx"], ["S", "bogus"], ["I", 1]])),
        ("x-dead-letter-exchange", lambda: r.choice([["S", ""], ["S", "~x0"], ["S", "amq.direct"],
                                                     ["I", 3]])),
        ("x-dead-letter-routing-key", lambda: r.choice([["S", "~dlq"], ["S", "k0"]])),
        ("x-max-priority", lambda: r.choice([["B", 5], ["I", 10], ["I", 300], ["S", "5"],
                                             ["I", -1]])),
        ("x-queue-mode", lambda: r.choice([["S", "lazy"], ["S", "default"], ["S", "weird"]])),
        ("x-single-active-consumer", lambda: r.choice([["t", True], ["t", False], ["S", "yes"]])),
        ("x-queue-type", lambda: r.choice([["S", "classic"], ["S", "quorum"], ["S", "bogus"]])),
        ("x-delivery-limit", lambda: r.choice([["I", 3], ["S", "3"]])),
        ("x-quorum-initial-group-size", lambda: ["I", 1]),
        ("x-queue-master-locator", lambda: r.choice([["S", "min-masters"], ["S", "nope"]])),
        ("x-unknown-argument", lambda: ["S", "whatever"]),
    ]
    for _ in range(r.choice([0, 0, 1, 1, 2, 3])):
        name, value = r.choice(pool)
        if all(a[0] != name for a in args):
            args.append([name, value()])
    if r.random() < quorum_bias and all(a[0] != "x-queue-type" for a in args):
        args.append(["x-queue-type", ["S", "quorum"]])
    return args


def properties(r):
    props = {}
    if r.random() < 0.5:
        props["delivery_mode"] = r.choice([1, 2, 2, 0, 3])
    if r.random() < 0.2:
        props["priority"] = r.choice([0, 3, 9, 255])
    if r.random() < 0.2:
        props["expiration"] = r.choice(["100000", "0", "-1", "abc", "1.5", "", " 10",
                                        "99999999999999999999", "600000"])
    if r.random() < 0.15:
        props["content_type"] = r.choice(["text/plain", "application/json"])
    if r.random() < 0.1:
        props["user_id"] = r.choice(["guest", "someone-else"])
    if r.random() < 0.1:
        props["message_id"] = "m-1"
    if r.random() < 0.1:
        props["correlation_id"] = "c-1"
    if r.random() < 0.1:
        props["timestamp"] = 1700000000
    if r.random() < 0.05:
        props["type"] = "t"
    if r.random() < 0.05:
        props["app_id"] = "app"
    if r.random() < 0.05:
        props["cluster_id"] = "cl"
    if r.random() < 0.05:
        props["reply_to"] = r.choice(["amq.rabbitmq.reply-to", "~q1"])
    if r.random() < 0.05:
        props["content_encoding"] = r.choice(["gzip", {"hex": "ff00"}])
    headers = []
    if r.random() < 0.35:
        for i in range(r.randrange(1, 4)):
            headers.append([f"k{r.randrange(3)}", typed_same_value(r)])
    if r.random() < 0.1:
        headers.append(["h", any_value(r)])
    if r.random() < 0.15:
        name = r.choice(["CC", "BCC"])
        value = r.choice([
            ["A", [["S", r.choice(KEYS)] for _ in range(r.randrange(1, 3))]],
            ["A", [["S", "~q1"], ["I", 5]]],
            ["A", [["x", "~q2"]]],
            ["S", "~q1"],
            ["A", []],
        ])
        headers.append([name, value])
    if r.random() < 0.05:
        headers.append(["x-match", ["S", "any"]])
    if headers:
        props["headers"] = headers
    return props


def body(r):
    return r.choice(["", "hello", "x" * 10, "b" * 300, "ünïcode", {"hex": "00ff80"}])


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.steps = []
        self.open = {}  # (conn, channel) -> opened by the session
        self.generated = 0

    def chan(self):
        r = self.r
        return r.choice(list(self.open) or [(0, 1)])

    def add(self, step):
        self.steps.append(step)

    def method(self, c, ch, name, settle=True, **args):
        step = {"op": "method", "c": c, "ch": ch, "name": name, "args": args}
        if not settle:
            step["settle"] = False
        self.add(step)

    def queue_name(self):
        r = self.r
        if self.generated and r.random() < 0.2:
            return f"@gen{r.randrange(self.generated)}"
        return r.choice(QUEUES + ["amq.rabbitmq.reply-to"] * (r.random() < 0.05))

    def exchange_name(self):
        r = self.r
        return r.choice(EXCHANGES + BUILTIN + ["amq.custom"] * (r.random() < 0.1))

    def handshake_variant(self):
        r = self.r
        step = {"op": "connect", "c": 0}
        kind = r.randrange(9)
        if kind == 0:
            step["header"] = r.choice([
                b"AMQP\x00\x00\x09\x00", b"AMQP\x00\x00\x08\x00", b"AMQP\x01\x01\x00\x09",
                b"AMQP\x01\x01\x09\x01", b"AMQP\x00\x00\x09\x02", b"AMQP\x00\x01\x00\x00",
                b"AMQP\x03\x01\x00\x00", b"HTTP/1.1", b"AMQP\x00\x00\x0a\x00",
                b"AMQP\x00\x00\x00\x09", b"AMQP\x00\x09\x01\x00"]).hex()
        elif kind == 1:
            step["password"] = "wrong"
        elif kind == 2:
            step["user"] = "nobody"
        elif kind == 3:
            step["mechanism"] = r.choice(["AMQPLAIN", "EXTERNAL", "CRAM-MD5", "plain", ""])
        elif kind == 4:
            step["response"] = r.choice([b"guest\x00guest", b"\x00guest", b"", b"\x00\x00",
                                         b"\x00guest\x00guest\x00extra", b"x\x00guest\x00guest"]).hex()
        elif kind == 5:
            step["tune_ok"] = r.choice([[0, 0, 0], [0, 131072, 0], [2047, 0, 0], [1, 4096, 0],
                                        [2047, 4095, 0], [3000, 131072, 0], [2047, 200000, 0]])
        elif kind == 6:
            step["vhost"] = r.choice(["nope", "", "/other"])
        elif kind == 7:
            step["locale"] = r.choice(["fr_FR", ""])
        else:
            step["mechanism"] = "AMQPLAIN"
        self.add(step)
        if kind in (5, 7, 8):
            self.add({"op": "open", "c": 0, "ch": 1})
            self.open[(0, 1)] = True
            if kind == 5:
                # frame and channel limits as negotiated
                self.add({"op": "open", "c": 0, "ch": r.choice([2, 2047, 2048, 65535])})
                self.add({"op": "publish", "c": 0, "ch": 1,
                          "args": {"exchange": "", "routing_key": "~q0"},
                          "props": {}, "body": "y" * r.choice([10, 5000, 140000])})

    def protocol_error(self, c, ch):
        r = self.r
        closed_ch = r.choice([5, 6, 7])
        good = method_frame(ch, "basic.publish", {"exchange": "", "routing_key": "~q0"})
        hdr = header_frame(ch, 5, {})
        templates = [
            lambda: method_frame(closed_ch, "queue.declare", {"queue": "~q0"}),
            lambda: method_frame(ch, "channel.open"),
            lambda: hdr,
            lambda: frame(FRAME_BODY, ch, b"abc"),
            lambda: method_frame(0, "basic.qos", {"prefetch_count": 1}),
            lambda: frame(1, ch, struct.pack(">HH", 99, 10)),
            lambda: frame(1, ch, struct.pack(">HH", 60, 999)),
            lambda: frame(1, 0, struct.pack(">HH", 10, 999)),
            lambda: frame(1, ch, struct.pack(">HH", 50, 10))[:-1] + b"\x00",
            lambda: frame(FRAME_HEARTBEAT, ch, b""),
            lambda: frame(9, ch, b"x"),
            lambda: good + header_frame(ch, 5, {}, class_id=50) + frame(FRAME_BODY, ch, b"hello"),
            lambda: good + hdr + frame(FRAME_BODY, ch, b"hello world"),
            lambda: good + hdr + method_frame(ch, "basic.qos", {"prefetch_count": 1}),
            lambda: good + method_frame(ch, "basic.qos", {"prefetch_count": 1}),
            lambda: method_frame(ch, "channel.close-ok"),
            lambda: method_frame(0, "connection.tune-ok", {"channel_max": 10, "frame_max": 4096}),
            lambda: method_frame(ch, "basic.publish", {"exchange": {"hex": "ff"}, "routing_key": "k"})
            + header_frame(ch, 0, {}),
            lambda: method_frame(ch, "basic.publish", {"exchange": "", "routing_key": {"hex": "c328"}})
            + header_frame(ch, 0, {}),
            lambda: method_frame(ch, "queue.declare", {"queue": {"hex": "fffe"}}),
            lambda: method_frame(ch, "exchange.declare", {"exchange": "~x0", "type": {"hex": "ff"}}),
            lambda: frame(1, ch, struct.pack(">HH", 50, 10) + b"\x00"),
            lambda: frame(1, ch, b"\x00"),
            lambda: frame(3, ch, b"x" * 10),
            lambda: method_frame(ch, "basic.publish", {"exchange": "", "routing_key": "~q0"})
            + frame(2, ch, struct.pack(">HHQH", 60, 0, 1, 0x2000) + struct.pack(">I", 9)
                    + b"\x01xZ"),
            lambda: method_frame(ch, "connection.open", {"virtual_host": "/"}),
            lambda: method_frame(ch, "basic.publish", {"exchange": "", "routing_key": "~q0"})
            + frame(2, ch, struct.pack(">HHQH", 60, 0, 2, 0x0004) + b"\x00"),
            lambda: frame(1, ch, struct.pack(">HH", 60, 40) + b"\x00\x00" + enc_shortstr("") + b"\x05ab"),
        ]
        data = r.choice(templates)()
        self.add({"op": "raw", "c": c, "ch": ch, "data": data.hex()})

    def walk_step(self):
        r = self.r
        c, ch = self.chan()
        kind = r.choices(
            ["x_declare", "x_delete", "x_bind", "q_declare", "q_bind", "q_unbind", "purge",
             "q_delete", "publish", "consume", "cancel", "get", "ack", "nack", "reject",
             "recover", "qos", "confirm", "tx", "commit", "rollback", "flow", "close_ch",
             "open_ch", "reply_to", "error", "close_conn", "reconnect"],
            [4, 1, 3, 6, 5, 1, 1, 2, 14, 4, 1, 5, 4, 2, 2, 1, 3, 2, 2, 2, 1, 1, 1, 1, 1, 2, 0.3,
             0.3])[0]
        if kind == "x_declare":
            self.method(c, ch, "exchange.declare", exchange=r.choice(EXCHANGES + ["amq.custom", "amq.direct", ""]),
                        type=r.choice(TYPES + ["x-bogus"] * (r.random() < 0.1)),
                        passive=r.random() < 0.1, durable=r.random() < 0.3,
                        auto_delete=r.random() < 0.2, internal=r.random() < 0.1,
                        nowait=r.random() < 0.05,
                        arguments=[["alternate-exchange", ["S", r.choice(EXCHANGES)]]] if r.random() < 0.15 else [])
        elif kind == "x_delete":
            self.method(c, ch, "exchange.delete", exchange=self.exchange_name(),
                        if_unused=r.random() < 0.5)
        elif kind == "x_bind":
            self.method(c, ch, r.choice(["exchange.bind", "exchange.unbind"]),
                        destination=r.choice(EXCHANGES), source=self.exchange_name(),
                        routing_key=r.choice(KEYS), arguments=[])
        elif kind == "q_declare":
            name = r.choice(QUEUES + [""] * 2 + ["amq.custom"] * (r.random() < 0.1))
            if name == "":
                self.generated += 1
            self.method(c, ch, "queue.declare", queue=name, passive=r.random() < 0.1,
                        durable=r.random() < 0.35, exclusive=r.random() < 0.15,
                        auto_delete=r.random() < 0.15, nowait=r.random() < 0.03,
                        arguments=queue_args(r))
        elif kind in ("q_bind", "q_unbind"):
            source = self.exchange_name()
            args = []
            if r.random() < 0.4:
                args = [["x-match", ["S", r.choice(["all", "any", "all-with-x", "any-with-x", "bogus"])]]]
                args += [[f"k{i}", typed_same_value(r)] for i in range(r.randrange(1, 3))]
            self.method(c, ch, "queue.bind" if kind == "q_bind" else "queue.unbind",
                        queue=self.queue_name(), exchange=source, routing_key=r.choice(KEYS),
                        arguments=args)
        elif kind == "purge":
            self.method(c, ch, "queue.purge", queue=self.queue_name())
        elif kind == "q_delete":
            self.method(c, ch, "queue.delete", queue=self.queue_name(),
                        if_unused=r.random() < 0.3, if_empty=r.random() < 0.3)
        elif kind == "publish":
            self.add({"op": "publish", "c": c, "ch": ch,
                      "args": {"exchange": self.exchange_name(), "routing_key": r.choice(KEYS),
                               "mandatory": r.random() < 0.3, "immediate": r.random() < 0.03},
                      "props": properties(r), "body": body(r)})
        elif kind == "consume":
            args = []
            if r.random() < 0.1:
                args = [["x-priority", r.choice([["I", 5], ["S", "x"]])]]
            self.method(c, ch, "basic.consume", queue=self.queue_name(),
                        consumer_tag=r.choice(["", "", "ct1", "ct2"]), no_local=r.random() < 0.05,
                        no_ack=r.random() < 0.3, exclusive=r.random() < 0.1, arguments=args)
        elif kind == "cancel":
            step = {"op": "method", "c": c, "ch": ch, "name": "basic.cancel",
                    "args": {"consumer_tag": "nope"}}
            if r.random() < 0.8:
                step["pick"] = r.random()
            self.add(step)
        elif kind == "get":
            self.method(c, ch, "basic.get", queue=self.queue_name(), no_ack=r.random() < 0.3)
        elif kind in ("ack", "nack", "reject"):
            name = {"ack": "basic.ack", "nack": "basic.nack", "reject": "basic.reject"}[kind]
            step = {"op": "method", "c": c, "ch": ch, "name": name,
                    "args": {"multiple": r.random() < 0.3, "requeue": r.random() < 0.5}}
            if name == "basic.reject":
                step["args"].pop("multiple")
            if r.random() < 0.85:
                step["pick"] = r.random()
            else:
                step["tag"] = r.choice([0, 1, 99])
            self.add(step)
        elif kind == "recover":
            self.method(c, ch, r.choice(["basic.recover", "basic.recover-async"]),
                        requeue=r.random() < 0.7)
        elif kind == "qos":
            self.method(c, ch, "basic.qos", prefetch_count=r.choice([0, 1, 2, 3, 10]),
                        prefetch_size=0 if r.random() < 0.95 else 1000,
                        **{"global": r.random() < 0.4})
        elif kind == "confirm":
            self.method(c, ch, "confirm.select", nowait=r.random() < 0.1)
        elif kind == "tx":
            self.method(c, ch, "tx.select")
        elif kind == "commit":
            self.method(c, ch, "tx.commit")
        elif kind == "rollback":
            self.method(c, ch, "tx.rollback")
        elif kind == "flow":
            self.method(c, ch, "channel.flow", active=r.random() < 0.7)
        elif kind == "close_ch":
            self.method(c, ch, "channel.close", reply_code=200, reply_text="bye")
            self.open.pop((c, ch), None)
        elif kind == "open_ch":
            c, ch = r.randrange(2), r.randrange(1, 4)
            self.add({"op": "open", "c": c, "ch": ch})
            self.open[(c, ch)] = True
        elif kind == "reply_to":
            self.method(c, ch, "basic.consume", queue="amq.rabbitmq.reply-to", consumer_tag="",
                        no_ack=r.random() < 0.85, arguments=[])
            self.add({"op": "publish", "c": c, "ch": ch,
                      "args": {"exchange": "", "routing_key": r.choice(["~q0", "~q1"]),
                               "mandatory": False},
                      "props": {"reply_to": "amq.rabbitmq.reply-to"}, "body": "request"})
        elif kind == "error":
            self.protocol_error(c, ch)
        elif kind == "close_conn":
            self.method(c, 0, "connection.close", reply_code=200, reply_text="bye")
            for key in [k for k in self.open if k[0] == c]:
                del self.open[key]
        elif kind == "reconnect":
            self.add({"op": "connect", "c": c})
            for key in [k for k in self.open if k[0] == c]:
                del self.open[key]
            self.add({"op": "open", "c": c, "ch": 1})
            self.open[(c, 1)] = True

    def session(self):
        r = self.r
        if r.random() < 0.12:
            self.handshake_variant()
            for _ in range(r.randrange(0, 5)):
                self.walk_step()
            return self.steps
        for c in range(2):
            self.add({"op": "connect", "c": c})
            for ch in range(1, r.choice([2, 3, 4])):
                self.add({"op": "open", "c": c, "ch": ch})
                self.open[(c, ch)] = True
        # A few queues to work with, most of the time.
        for q in QUEUES[:r.randrange(0, 4)]:
            self.method(0, 1, "queue.declare", queue=q, durable=r.random() < 0.3,
                        arguments=queue_args(r, 0.02))
        for _ in range(r.randrange(10, 40)):
            self.walk_step()
        return self.steps


def session(seed):
    return Gen(seed).session()
