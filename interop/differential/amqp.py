"""A raw AMQP 0-9-1 codec (RabbitMQ's dialect) for the differential fuzzer.

It encodes whatever it is given, including what a client library would refuse to send (short
strings that are not UTF-8, out-of-range values, unknown classes), and decodes what a broker
sends into plain JSON-able values, with every field value's type kept: a header sent as a signed
32-bit integer must come back as one.

Typed field values are `[tag, value]` pairs with RabbitMQ's tags: t bool, b int8, B uint8,
s int16, u uint16, I int32, i uint32, l int64, f float, d double, D decimal ([scale, value]),
S long string, x byte array, A array (of typed values), T timestamp, F table (of name, typed
value pairs), V void. String values are text when they are UTF-8, else {"hex": "..."}.
"""

import struct

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

# (class, method) -> (name, [(field, type)]). Types: octet short long longlong shortstr
# longstr bit table timestamp.
METHODS = {
    (10, 10): ("connection.start", [("version_major", "octet"), ("version_minor", "octet"),
                                    ("server_properties", "table"), ("mechanisms", "longstr"),
                                    ("locales", "longstr")]),
    (10, 11): ("connection.start-ok", [("client_properties", "table"), ("mechanism", "shortstr"),
                                       ("response", "longstr"), ("locale", "shortstr")]),
    (10, 20): ("connection.secure", [("challenge", "longstr")]),
    (10, 21): ("connection.secure-ok", [("response", "longstr")]),
    (10, 30): ("connection.tune", [("channel_max", "short"), ("frame_max", "long"),
                                   ("heartbeat", "short")]),
    (10, 31): ("connection.tune-ok", [("channel_max", "short"), ("frame_max", "long"),
                                      ("heartbeat", "short")]),
    (10, 40): ("connection.open", [("virtual_host", "shortstr"), ("capabilities", "shortstr"),
                                   ("insist", "bit")]),
    (10, 41): ("connection.open-ok", [("known_hosts", "shortstr")]),
    (10, 50): ("connection.close", [("reply_code", "short"), ("reply_text", "shortstr"),
                                    ("class_id", "short"), ("method_id", "short")]),
    (10, 51): ("connection.close-ok", []),
    (10, 60): ("connection.blocked", [("reason", "shortstr")]),
    (10, 61): ("connection.unblocked", []),
    (10, 70): ("connection.update-secret", [("new_secret", "longstr"), ("reason", "shortstr")]),
    (10, 71): ("connection.update-secret-ok", []),
    (20, 10): ("channel.open", [("reserved_1", "shortstr")]),
    (20, 11): ("channel.open-ok", [("reserved_1", "longstr")]),
    (20, 20): ("channel.flow", [("active", "bit")]),
    (20, 21): ("channel.flow-ok", [("active", "bit")]),
    (20, 40): ("channel.close", [("reply_code", "short"), ("reply_text", "shortstr"),
                                 ("class_id", "short"), ("method_id", "short")]),
    (20, 41): ("channel.close-ok", []),
    (40, 10): ("exchange.declare", [("reserved_1", "short"), ("exchange", "shortstr"),
                                    ("type", "shortstr"), ("passive", "bit"), ("durable", "bit"),
                                    ("auto_delete", "bit"), ("internal", "bit"),
                                    ("nowait", "bit"), ("arguments", "table")]),
    (40, 11): ("exchange.declare-ok", []),
    (40, 20): ("exchange.delete", [("reserved_1", "short"), ("exchange", "shortstr"),
                                   ("if_unused", "bit"), ("nowait", "bit")]),
    (40, 21): ("exchange.delete-ok", []),
    (40, 30): ("exchange.bind", [("reserved_1", "short"), ("destination", "shortstr"),
                                 ("source", "shortstr"), ("routing_key", "shortstr"),
                                 ("nowait", "bit"), ("arguments", "table")]),
    (40, 31): ("exchange.bind-ok", []),
    (40, 40): ("exchange.unbind", [("reserved_1", "short"), ("destination", "shortstr"),
                                   ("source", "shortstr"), ("routing_key", "shortstr"),
                                   ("nowait", "bit"), ("arguments", "table")]),
    (40, 51): ("exchange.unbind-ok", []),
    (50, 10): ("queue.declare", [("reserved_1", "short"), ("queue", "shortstr"),
                                 ("passive", "bit"), ("durable", "bit"), ("exclusive", "bit"),
                                 ("auto_delete", "bit"), ("nowait", "bit"),
                                 ("arguments", "table")]),
    (50, 11): ("queue.declare-ok", [("queue", "shortstr"), ("message_count", "long"),
                                    ("consumer_count", "long")]),
    (50, 20): ("queue.bind", [("reserved_1", "short"), ("queue", "shortstr"),
                              ("exchange", "shortstr"), ("routing_key", "shortstr"),
                              ("nowait", "bit"), ("arguments", "table")]),
    (50, 21): ("queue.bind-ok", []),
    (50, 30): ("queue.purge", [("reserved_1", "short"), ("queue", "shortstr"), ("nowait", "bit")]),
    (50, 31): ("queue.purge-ok", [("message_count", "long")]),
    (50, 40): ("queue.delete", [("reserved_1", "short"), ("queue", "shortstr"),
                                ("if_unused", "bit"), ("if_empty", "bit"), ("nowait", "bit")]),
    (50, 41): ("queue.delete-ok", [("message_count", "long")]),
    (50, 50): ("queue.unbind", [("reserved_1", "short"), ("queue", "shortstr"),
                                ("exchange", "shortstr"), ("routing_key", "shortstr"),
                                ("arguments", "table")]),
    (50, 51): ("queue.unbind-ok", []),
    (60, 10): ("basic.qos", [("prefetch_size", "long"), ("prefetch_count", "short"),
                             ("global", "bit")]),
    (60, 11): ("basic.qos-ok", []),
    (60, 20): ("basic.consume", [("reserved_1", "short"), ("queue", "shortstr"),
                                 ("consumer_tag", "shortstr"), ("no_local", "bit"),
                                 ("no_ack", "bit"), ("exclusive", "bit"), ("nowait", "bit"),
                                 ("arguments", "table")]),
    (60, 21): ("basic.consume-ok", [("consumer_tag", "shortstr")]),
    (60, 30): ("basic.cancel", [("consumer_tag", "shortstr"), ("nowait", "bit")]),
    (60, 31): ("basic.cancel-ok", [("consumer_tag", "shortstr")]),
    (60, 40): ("basic.publish", [("reserved_1", "short"), ("exchange", "shortstr"),
                                 ("routing_key", "shortstr"), ("mandatory", "bit"),
                                 ("immediate", "bit")]),
    (60, 50): ("basic.return", [("reply_code", "short"), ("reply_text", "shortstr"),
                                ("exchange", "shortstr"), ("routing_key", "shortstr")]),
    (60, 60): ("basic.deliver", [("consumer_tag", "shortstr"), ("delivery_tag", "longlong"),
                                 ("redelivered", "bit"), ("exchange", "shortstr"),
                                 ("routing_key", "shortstr")]),
    (60, 70): ("basic.get", [("reserved_1", "short"), ("queue", "shortstr"), ("no_ack", "bit")]),
    (60, 71): ("basic.get-ok", [("delivery_tag", "longlong"), ("redelivered", "bit"),
                                ("exchange", "shortstr"), ("routing_key", "shortstr"),
                                ("message_count", "long")]),
    (60, 72): ("basic.get-empty", [("reserved_1", "shortstr")]),
    (60, 80): ("basic.ack", [("delivery_tag", "longlong"), ("multiple", "bit")]),
    (60, 90): ("basic.reject", [("delivery_tag", "longlong"), ("requeue", "bit")]),
    (60, 100): ("basic.recover-async", [("requeue", "bit")]),
    (60, 110): ("basic.recover", [("requeue", "bit")]),
    (60, 111): ("basic.recover-ok", []),
    (60, 120): ("basic.nack", [("delivery_tag", "longlong"), ("multiple", "bit"),
                               ("requeue", "bit")]),
    (85, 10): ("confirm.select", [("nowait", "bit")]),
    (85, 11): ("confirm.select-ok", []),
    (90, 10): ("tx.select", []),
    (90, 11): ("tx.select-ok", []),
    (90, 20): ("tx.commit", []),
    (90, 21): ("tx.commit-ok", []),
    (90, 30): ("tx.rollback", []),
    (90, 31): ("tx.rollback-ok", []),
}
BY_NAME = {name: (ids, fields) for ids, (name, fields) in METHODS.items()}

# Basic properties, in flag order (bit 15 first).
PROPERTIES = [
    ("content_type", "shortstr"), ("content_encoding", "shortstr"), ("headers", "table"),
    ("delivery_mode", "octet"), ("priority", "octet"), ("correlation_id", "shortstr"),
    ("reply_to", "shortstr"), ("expiration", "shortstr"), ("message_id", "shortstr"),
    ("timestamp", "timestamp"), ("type", "shortstr"), ("user_id", "shortstr"),
    ("app_id", "shortstr"), ("cluster_id", "shortstr"),
]


class DecodeError(Exception):
    pass


def text_of(raw: bytes):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex()}


def bytes_of(value) -> bytes:
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"])
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8")


# ---- encoding ----

def enc_shortstr(value) -> bytes:
    raw = bytes_of(value)
    # Deliberately not checked: an over-long short string is a test case (the length wraps).
    return bytes([len(raw) & 0xFF]) + raw


def enc_longstr(value) -> bytes:
    raw = bytes_of(value)
    return struct.pack(">I", len(raw)) + raw


def enc_value(typed) -> bytes:
    tag, value = typed
    t = tag.encode()
    if tag == "t":
        return t + bytes([1 if value else 0])
    if tag in ("b", "B", "s", "u", "I", "i", "l", "f", "d"):
        fmt = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q",
               "f": ">f", "d": ">d"}[tag]
        return t + struct.pack(fmt, value)
    if tag == "D":
        scale, number = value
        return t + struct.pack(">BI", scale, number)
    if tag in ("S", "x"):
        return t + enc_longstr(value)
    if tag == "T":
        return t + struct.pack(">Q", value)
    if tag == "A":
        inner = b"".join(enc_value(v) for v in value)
        return t + struct.pack(">I", len(inner)) + inner
    if tag == "F":
        return t + enc_table(value)
    if tag == "V":
        return t
    raise ValueError(f"unknown field type {tag!r}")


def enc_table(pairs) -> bytes:
    inner = b"".join(enc_shortstr(k) + enc_value(v) for k, v in pairs)
    return struct.pack(">I", len(inner)) + inner


def enc_fields(fields, args: dict) -> bytes:
    out = bytearray()
    bits, nbits = 0, 0
    for name, kind in fields:
        value = args.get(name)
        if kind == "bit":
            if value:
                bits |= 1 << nbits
            nbits += 1
            continue
        if nbits:
            out.append(bits)
            bits, nbits = 0, 0
        if kind == "octet":
            out += struct.pack(">B", value or 0)
        elif kind == "short":
            out += struct.pack(">H", value or 0)
        elif kind == "long":
            out += struct.pack(">I", value or 0)
        elif kind in ("longlong", "timestamp"):
            out += struct.pack(">Q", value or 0)
        elif kind == "shortstr":
            out += enc_shortstr(value if value is not None else "")
        elif kind == "longstr":
            out += enc_longstr(value if value is not None else "")
        elif kind == "table":
            out += enc_table(value or [])
    if nbits:
        out.append(bits)
    return bytes(out)


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([FRAME_END])


def method_frame(channel: int, name: str, args: dict | None = None) -> bytes:
    (class_id, method_id), fields = BY_NAME[name]
    payload = struct.pack(">HH", class_id, method_id) + enc_fields(fields, args or {})
    return frame(FRAME_METHOD, channel, payload)


def header_frame(channel: int, body_size: int, props: dict, class_id: int = 60) -> bytes:
    flags, out = 0, bytearray()
    for i, (name, kind) in enumerate(PROPERTIES):
        if name not in props:
            continue
        flags |= 1 << (15 - i)
        value = props[name]
        if kind == "shortstr":
            out += enc_shortstr(value)
        elif kind == "table":
            out += enc_table(value)
        elif kind == "octet":
            out += struct.pack(">B", value & 0xFF)
        elif kind == "timestamp":
            out += struct.pack(">Q", value)
    payload = struct.pack(">HHQH", class_id, 0, body_size, flags) + bytes(out)
    return frame(FRAME_HEADER, channel, payload)


# ---- decoding ----

class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def shortstr(self):
        return text_of(self.take(self.unpack(">B")))

    def longstr(self):
        return text_of(self.take(self.unpack(">I")))

    def value(self):
        tag = chr(self.unpack(">B"))
        if tag == "t":
            return [tag, self.unpack(">B") != 0]
        simple = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q",
                  "f": ">f", "d": ">d", "T": ">Q"}
        if tag in simple:
            return [tag, self.unpack(simple[tag])]
        if tag == "D":
            return [tag, [self.unpack(">B"), self.unpack(">I")]]
        if tag in ("S", "x"):
            return [tag, self.longstr()]
        if tag == "A":
            sub = Reader(self.take(self.unpack(">I")))
            items = []
            while sub.pos < len(sub.data):
                items.append(sub.value())
            return [tag, items]
        if tag == "F":
            return [tag, self.table()]
        if tag == "V":
            return [tag, None]
        raise DecodeError(f"unknown field type {tag!r}")

    def table(self):
        sub = Reader(self.take(self.unpack(">I")))
        pairs = []
        while sub.pos < len(sub.data):
            key = sub.shortstr()
            pairs.append([key, sub.value()])
        return pairs


def decode_method(payload: bytes):
    r = Reader(payload)
    ids = (r.unpack(">H"), r.unpack(">H"))
    if ids not in METHODS:
        return {"method": f"unknown {ids[0]}.{ids[1]}"}
    name, fields = METHODS[ids]
    out = {"method": name}
    bits, nbits = 0, 8
    for field, kind in fields:
        if kind == "bit":
            if nbits == 8:
                bits, nbits = r.unpack(">B"), 0
            out[field] = bool(bits & (1 << nbits))
            nbits += 1
            continue
        nbits = 8
        if kind == "octet":
            out[field] = r.unpack(">B")
        elif kind == "short":
            out[field] = r.unpack(">H")
        elif kind == "long":
            out[field] = r.unpack(">I")
        elif kind in ("longlong", "timestamp"):
            out[field] = r.unpack(">Q")
        elif kind == "shortstr":
            out[field] = r.shortstr()
        elif kind == "longstr":
            out[field] = r.longstr()
        elif kind == "table":
            out[field] = r.table()
    return out


def decode_header(payload: bytes):
    r = Reader(payload)
    _class, _weight, size, flags = r.unpack(">H"), r.unpack(">H"), r.unpack(">Q"), r.unpack(">H")
    props = {}
    for i, (name, kind) in enumerate(PROPERTIES):
        if not flags & (1 << (15 - i)):
            continue
        if kind == "shortstr":
            props[name] = r.shortstr()
        elif kind == "table":
            props[name] = r.table()
        elif kind == "octet":
            props[name] = r.unpack(">B")
        elif kind == "timestamp":
            props[name] = r.unpack(">Q")
    return size, props


def split_frames(buffer: bytearray):
    """Complete frames at the front of `buffer` (removed from it): (type, channel, payload).
    A frame that does not end in 0xCE is returned as type -1 with the rest of the buffer."""
    frames = []
    while True:
        if len(buffer) >= 8 and buffer[:4] == b"AMQP":
            # A protocol header back from the broker: it refused our version.
            frames.append((-2, 0, bytes(buffer[:8])))
            del buffer[:8]
            continue
        if len(buffer) < 7:
            return frames
        kind, channel, size = struct.unpack(">BHI", bytes(buffer[:7]))
        if len(buffer) < 8 + size:
            return frames
        payload = bytes(buffer[7:7 + size])
        end = buffer[7 + size]
        del buffer[:8 + size]
        if end != FRAME_END:
            frames.append((-1, channel, payload))
            buffer.clear()
            return frames
        frames.append((kind, channel, payload))
