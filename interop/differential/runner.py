"""Run one generated session against a broker over raw sockets and record what a client sees.

A session is a list of steps (see gen.py). The runner sends each step, waits for its reply (or
the close it provoked), then, for steps that can make the broker send something unasked
(deliveries, returns, confirms, cancel notifications), waits until the connections are quiet.
Everything received during a step is that step's events, so the trace says not only what came
but in answer to what (a `basic.return` in tx mode at publish time or at commit time).

Within a step, events are grouped by (connection, channel) in arrival order, and publisher
confirms are folded into one sorted set per channel: the order of sync replies against
deliveries on different channels, and how acks are coalesced with `multiple`, legitimately vary.
"""

import re
import selectors
import socket
import struct
import time

from amqp import (FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, METHODS,
                  PROTOCOL_HEADER, BY_NAME, decode_header, decode_method, header_frame,
                  method_frame, split_frames, text_of, bytes_of, frame, enc_table)

REPLY_TIMEOUT = 5.0
CONFIRM_TIMEOUT = 2.0

# Methods whose answer the runner waits for (unless nowait is set).
REPLIES = {
    "channel.open": ["channel.open-ok"], "channel.close": ["channel.close-ok"],
    "channel.flow": ["channel.flow-ok"],
    "exchange.declare": ["exchange.declare-ok"], "exchange.delete": ["exchange.delete-ok"],
    "exchange.bind": ["exchange.bind-ok"], "exchange.unbind": ["exchange.unbind-ok"],
    "queue.declare": ["queue.declare-ok"], "queue.bind": ["queue.bind-ok"],
    "queue.purge": ["queue.purge-ok"], "queue.delete": ["queue.delete-ok"],
    "queue.unbind": ["queue.unbind-ok"], "basic.qos": ["basic.qos-ok"],
    "basic.consume": ["basic.consume-ok"], "basic.cancel": ["basic.cancel-ok"],
    "basic.get": ["basic.get-ok", "basic.get-empty"], "basic.recover": ["basic.recover-ok"],
    "confirm.select": ["confirm.select-ok"], "tx.select": ["tx.select-ok"],
    "tx.commit": ["tx.commit-ok"], "tx.rollback": ["tx.rollback-ok"],
    "connection.close": ["connection.close-ok"],
}
CONTENT = {"basic.deliver", "basic.get-ok", "basic.return"}
# Fields that say nothing a client can act on, or that vary between runs.
DROP_FIELDS = {"reserved_1", "known_hosts"}
SERVER_PROPERTIES_KEPT = {"capabilities", "product", "version"}


class Channel:
    def __init__(self):
        self.open = False
        self.unacked = []          # delivery tags the client must settle, in order
        self.no_ack_tags = set()   # consumer tags consuming with no_ack
        self.confirm = False
        self.published = 0
        self.unconfirmed = set()
        self.tags = []             # consumer tags, as the broker named them
        self.content = None        # (event, size, props, body) being assembled


class Conn:
    def __init__(self, index):
        self.index = index
        self.sock = None
        self.buf = bytearray()
        self.alive = False
        self.closing = False
        self.channels = {}
        self.frame_max = 131072


class Runner:
    def __init__(self, host, port, quiet=0.03, vhost="/"):
        self.host, self.port, self.quiet, self.vhost = host, port, quiet, vhost
        self.conns = {}
        self.sel = selectors.DefaultSelector()
        self.events = []
        self.confirms = {}
        self.generated = []  # server-generated queue names, in order
        self.waiting = None  # (conn, channel, [method names]) the current step waits for
        self.got_reply = False
        self.get_no_ack = False
        self.consume_no_ack = False
        self.tune = None

    # ---- socket plumbing ----

    def send(self, conn, data):
        if not conn.alive:
            return False
        try:
            conn.sock.sendall(data)
            return True
        except OSError:
            self.lost(conn, "send failed")
            return False

    def lost(self, conn, why):
        if conn.alive:
            conn.alive = False
            try:
                self.sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
            if not conn.closing:
                self.record(conn.index, 0, {"eof": why})
            if self.waiting and self.waiting[0] == conn.index:
                self.got_reply = True

    def pump(self, timeout):
        """Read whatever arrives within `timeout`; True if anything did."""
        got = False
        for key, _ in self.sel.select(timeout):
            conn = key.data
            try:
                data = conn.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            except BlockingIOError:
                continue
            if not data:
                self.lost(conn, "closed")
                continue
            got = True
            conn.buf += data
            for kind, channel, payload in split_frames(conn.buf):
                self.on_frame(conn, kind, channel, payload)
        return got

    def wait_reply(self):
        deadline = time.monotonic() + REPLY_TIMEOUT
        while not self.got_reply:
            left = deadline - time.monotonic()
            if left <= 0:
                c, ch, names = self.waiting
                self.record(c, ch, {"timeout": names[0]})
                break
            self.pump(min(left, 0.05))
        self.waiting = None

    def settle(self):
        """Wait until nothing arrives for `quiet` seconds and every confirm is in."""
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while True:
            if self.pump(self.quiet):
                continue
            pending = any(ch.unconfirmed for c in self.conns.values() if c.alive
                          for ch in c.channels.values() if ch.open)
            if not pending or time.monotonic() > deadline:
                return

    # ---- what arrives ----

    def record(self, c, ch, event):
        self.events.append((c, ch, event))

    def on_frame(self, conn, kind, channel, payload):
        if kind == -2:
            self.record(conn.index, 0, {"protocol_header": payload.hex()})
            return
        if kind == -1:
            self.record(conn.index, channel, {"bad_frame": True})
            return
        if kind == FRAME_HEARTBEAT:
            return
        chan = conn.channels.setdefault(channel, Channel())
        if kind == FRAME_METHOD:
            try:
                m = decode_method(payload)
            except Exception as error:  # a method this codec cannot read is itself a finding
                self.record(conn.index, channel, {"undecodable": str(error)})
                return
            self.on_method(conn, channel, chan, m)
        elif kind == FRAME_HEADER and chan.content:
            size, props = decode_header(payload)
            chan.content[1], chan.content[2] = size, props
            if size == 0:
                self.finish_content(conn, channel, chan)
        elif kind == FRAME_BODY and chan.content:
            chan.content[3] += payload
            if len(chan.content[3]) >= chan.content[1]:
                self.finish_content(conn, channel, chan)
        else:
            self.record(conn.index, channel, {"unexpected_frame": kind})

    def finish_content(self, conn, channel, chan):
        m, _size, props, body = chan.content
        chan.content = None
        m["props"] = props
        m["body"] = text_of(bytes(body))
        self.deliver_bookkeeping(chan, m)
        self.record(conn.index, channel, m)

    def deliver_bookkeeping(self, chan, m):
        name = m["method"]
        if name == "basic.deliver" and m["consumer_tag"] not in chan.no_ack_tags:
            chan.unacked.append(m["delivery_tag"])
        elif name == "basic.get-ok" and not self.get_no_ack:
            chan.unacked.append(m["delivery_tag"])

    def on_method(self, conn, channel, chan, m):
        name = m["method"]
        for f in DROP_FIELDS:
            m.pop(f, None)
        if name == "connection.start":
            props = dict((k, v) for k, v in m["server_properties"])
            # Leveret's tables are maps and go out in key order; RabbitMQ's capabilities list
            # has its own order. No client reads a table's order.
            if "capabilities" in props and props["capabilities"][0] == "F":
                props["capabilities"] = ["F", sorted(props["capabilities"][1])]
            m["server_properties"] = [[k, props[k]] for k in sorted(props)
                                      if k in SERVER_PROPERTIES_KEPT]
        if name == "connection.tune":
            self.tune = m
        if name in CONTENT:
            chan.content = [m, 0, {}, bytearray()]
            return
        if name in ("basic.ack", "basic.nack") and chan.confirm and channel != 0:
            tags = self.settled_tags(chan, m["delivery_tag"], m["multiple"])
            entry = self.confirms.setdefault((conn.index, channel), {"ack": [], "nack": []})
            entry["ack" if name == "basic.ack" else "nack"].extend(tags)
            self.check_reply(conn, channel, name)
            return
        if name == "channel.close":
            self.send(conn, method_frame(channel, "channel.close-ok"))
            chan.open = False
            chan.unacked.clear()
            chan.unconfirmed.clear()
        elif name == "connection.close":
            self.send(conn, method_frame(0, "connection.close-ok"))
            conn.closing = True
        elif name == "basic.cancel":
            # The broker cancelled a consumer (its queue went): the client is told nothing else.
            pass
        elif name == "basic.consume-ok":
            chan.tags.append(m["consumer_tag"])
            if getattr(self, "consume_no_ack", False):
                chan.no_ack_tags.add(m["consumer_tag"])
        elif name == "queue.declare-ok":
            q = m["queue"]
            if isinstance(q, str) and q.startswith("amq.gen-") and q not in self.generated:
                self.generated.append(q)
        self.record(conn.index, channel, m)
        self.check_reply(conn, channel, name)

    def check_reply(self, conn, channel, name):
        if not self.waiting:
            return
        c, ch, names = self.waiting
        if c != conn.index:
            return
        if name == "connection.close" or (ch == channel and (name in names or name == "channel.close")):
            self.got_reply = True

    def settled_tags(self, chan, tag, multiple):
        if multiple:
            # The tag itself too: a publish the runner did not count (a raw frame) is still
            # confirmed, whether the broker folds it into a multiple ack or not.
            tags = sorted({t for t in chan.unconfirmed if t <= tag} | {tag})
        else:
            tags = [tag] if tag in chan.unconfirmed else [tag]
        chan.unconfirmed.difference_update(tags)
        return tags

    # ---- steps ----

    def connect(self, step):
        c = step["c"]
        old = self.conns.get(c)
        if old and old.alive:
            old.closing = True
            self.lost(old, "replaced")
        conn = Conn(c)
        self.conns[c] = conn
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn.sock, conn.alive = sock, True
        self.sel.register(sock, selectors.EVENT_READ, conn)
        header = bytes.fromhex(step["header"]) if "header" in step else PROTOCOL_HEADER
        self.send(conn, header)
        # connection.start (or the broker's own protocol header, or nothing and a close)
        self.waiting, self.got_reply = (c, 0, ["connection.start"]), False
        self.wait_reply()
        start = next((e for (ci, _, e) in self.events if ci == c and e.get("method") == "connection.start"), None)
        if not conn.alive or start is None:
            self.settle()
            return
        mechanism = step.get("mechanism", "PLAIN")
        user, password = step.get("user", "guest"), step.get("password", "guest")
        if "response" in step:
            response = bytes.fromhex(step["response"])
        elif mechanism == "AMQPLAIN":
            response = enc_table([["LOGIN", ["S", user]], ["PASSWORD", ["S", password]]])[4:]
        else:
            response = b"\x00" + user.encode() + b"\x00" + password.encode()
        props = step.get("client_properties", [["product", ["S", "leveret-differential"]],
                                               ["capabilities", ["F", [
                                                   ["publisher_confirms", ["t", True]],
                                                   ["consumer_cancel_notify", ["t", True]],
                                                   ["basic.nack", ["t", True]],
                                                   ["connection.blocked", ["t", True]],
                                                   ["authentication_failure_close", ["t", True]],
                                               ]]]])
        began = time.monotonic()
        self.send(conn, method_frame(0, "connection.start-ok", {
            "client_properties": props, "mechanism": mechanism, "response": response,
            "locale": step.get("locale", "en_US")}))
        self.waiting, self.got_reply = (c, 0, ["connection.tune", "connection.secure"]), False
        self.wait_reply()
        if not conn.alive or conn.closing:
            if time.monotonic() - began > 1.5:
                self.record(c, 0, {"delayed_close": True})
            self.settle()
            return
        tune = getattr(self, "tune", None)
        if tune is None:
            self.settle()
            return
        self.tune = None
        cm, fm, hb = step.get("tune_ok", [tune["channel_max"], tune["frame_max"], 0])
        conn.frame_max = fm or 131072
        self.send(conn, method_frame(0, "connection.tune-ok", {"channel_max": cm, "frame_max": fm,
                                                               "heartbeat": hb}))
        self.send(conn, method_frame(0, "connection.open",
                                     {"virtual_host": step.get("vhost", self.vhost)}))
        self.waiting, self.got_reply = (c, 0, ["connection.open-ok"]), False
        self.wait_reply()
        self.settle()

    def resolve(self, value):
        """Substitute generated names: "@gen0" is the first server-named queue."""
        if isinstance(value, str) and value.startswith("@gen"):
            i = int(value[4:])
            return self.generated[i] if i < len(self.generated) else "amq.gen-missing"
        return value

    def pick_tag(self, chan, step):
        if chan.unacked and "pick" in step:
            return chan.unacked[min(int(step["pick"] * len(chan.unacked)), len(chan.unacked) - 1)]
        return step.get("tag", 0)

    def run_step(self, step):
        op = step["op"]
        if op == "connect":
            self.connect(step)
            return
        conn = self.conns.get(step.get("c", 0))
        if conn is None or not conn.alive or conn.closing:
            self.record(step.get("c", 0), 0, {"skipped": "connection closed"})
            return
        ch = step.get("ch", 0)
        chan = conn.channels.setdefault(ch, Channel())
        if op == "raw":
            self.send(conn, bytes.fromhex(step["data"]))
            self.settle()
            return
        if op == "open":
            self.call(conn, ch, "channel.open", {}, settle=False)
            if any(e.get("method") == "channel.open-ok" for (ci, chi, e) in self.events
                   if ci == conn.index and chi == ch):
                fresh = Channel()
                fresh.open = True
                conn.channels[ch] = fresh
            return
        if not chan.open and ch != 0:
            self.record(conn.index, ch, {"skipped": "channel closed"})
            return
        if op == "method":
            args = {k: self.resolve(v) for k, v in step["args"].items()}
            name = step["name"]
            if name == "basic.consume":
                self.consume_no_ack = bool(args.get("no_ack"))
            if name in ("basic.ack", "basic.reject", "basic.nack"):
                tag = self.pick_tag(chan, step)
                args["delivery_tag"] = tag
                self.settle_local(chan, tag, args.get("multiple", False))
            if name == "basic.cancel" and "pick" in step:
                if chan.tags:
                    args["consumer_tag"] = chan.tags[min(int(step["pick"] * len(chan.tags)), len(chan.tags) - 1)]
            if name == "basic.get":
                self.get_no_ack = bool(args.get("no_ack"))
            if name == "confirm.select":
                chan.confirm = True
            if name in ("basic.recover", "basic.recover-async"):
                chan.unacked.clear()
            if name == "channel.close":
                chan.unacked.clear()
            self.call(conn, ch, name, args, settle=step.get("settle", True))
            if name == "channel.close":
                chan.open = False
            if name == "connection.close":
                conn.closing = True
                self.lost(conn, "closed by client")
            return
        if op == "publish":
            body = bytes_of(step.get("body", ""))
            args = {k: self.resolve(v) for k, v in step["args"].items()}
            props = step.get("props", {})
            if "reply_to" in props:
                props = dict(props)
            data = method_frame(ch, "basic.publish", args)
            data += header_frame(ch, len(body), props)
            limit = max(conn.frame_max - 8, 1)
            for i in range(0, len(body), limit):
                data += frame(FRAME_BODY, ch, body[i:i + limit])
            if chan.confirm:
                chan.published += 1
                chan.unconfirmed.add(chan.published)
            self.send(conn, data)
            if step.get("settle", True):
                self.settle()
            return
        raise ValueError(f"unknown op {op}")

    def settle_local(self, chan, tag, multiple):
        if multiple:
            chan.unacked = [t for t in chan.unacked if t > tag] if tag else []
        elif tag in chan.unacked:
            chan.unacked.remove(tag)

    def call(self, conn, ch, name, args, settle=True):
        replies = REPLIES.get(name)
        self.send(conn, method_frame(ch, name, args))
        if replies and not args.get("nowait"):
            self.waiting, self.got_reply = (conn.index, ch, replies), False
            self.wait_reply()
        if settle or not replies or args.get("nowait"):
            self.settle()

    def run(self, steps):
        trace = []
        for i, step in enumerate(steps):
            self.events, self.confirms = [], {}
            try:
                self.run_step(step)
            except OSError as error:
                self.record(step.get("c", 0), 0, {"error": type(error).__name__})
            trace.append(self.step_record(i))
        for conn in self.conns.values():
            if conn.alive:
                conn.closing = True
                self.lost(conn, "end")
        return trace

    def step_record(self, i):
        groups = {}
        for c, ch, e in self.events:
            groups.setdefault(f"{c}.{ch}", []).append(e)
        for (c, ch), entry in self.confirms.items():
            groups.setdefault(f"{c}.{ch}", []).append(
                {"confirms": {k: sorted(v) for k, v in entry.items() if v}})
        return {k: groups[k] for k in sorted(groups)}


GENERATED = re.compile(r"amq\.(gen|ctag)-[A-Za-z0-9_\-]{10,}")
REPLY_TO = re.compile(r"amq\.rabbitmq\.reply-to\.[A-Za-z0-9+/=._\-]+")


def normalise(trace, prefix, vhost="/"):
    """Replace what legitimately varies: the run's name prefix and vhost, generated names
    (numbered in order of appearance), direct reply-to addresses, and the order of the
    mechanisms in connection.start, which RabbitMQ 3.10.8 itself changes from boot to boot
    (`AMQPLAIN PLAIN` on one, `PLAIN AMQPLAIN` on the next: its registry's order)."""
    seen = {}

    def fix(value):
        if isinstance(value, str):
            value = value.replace(prefix, "P")
            if vhost != "/":
                value = value.replace(f"vhost '{vhost}'", "vhost '/'").replace(
                    f"vhost {vhost} ", "vhost / ")

            def number(m):
                return seen.setdefault(m.group(0), f"amq.{m.group(1)}-#{len(seen)}")
            value = GENERATED.sub(number, value)
            return REPLY_TO.sub("amq.rabbitmq.reply-to.#", value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            fixed = {k: fix(v) for k, v in value.items()}
            if fixed.get("method") == "connection.start" and isinstance(
                    fixed.get("mechanisms"), str):
                fixed["mechanisms"] = " ".join(sorted(fixed["mechanisms"].split()))
            return fixed
        return value

    return fix(trace)
