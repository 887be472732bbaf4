"""Queue policies and dead-lettering through pika, run against Leveret and RabbitMQ alike.

x-death is checked down to the AMQP field types ('l' for count, 'T' for time) by watching
pika's decoder.
"""
import time

import pika
import pika.data
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError


@pytest.fixture
def field_types(monkeypatch):
    """(type byte, value) of every field pika decodes while the test runs."""
    seen = []
    original = pika.data.decode_value

    def spy(encoded, offset):
        kind = encoded[offset:offset + 1]
        value, end = original(encoded, offset)
        seen.append((kind, value))
        return value, end

    monkeypatch.setattr(pika.data, "decode_value", spy)
    return seen


def get(ch, queue, tries=100):
    """basic.get, polling: dead-lettering and expiry are asynchronous."""
    for _ in range(tries):
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method:
            return method, props, body
        time.sleep(0.02)
    return None, None, None


def text(b):
    return b.decode() if isinstance(b, bytes) else b


def dlx_setup(ch, q, **args):
    dead = q + "-dead"
    ch.exchange_declare(q + "-dlx", "fanout", auto_delete=True)
    ch.queue_declare(dead, auto_delete=False)
    ch.queue_bind(dead, q + "-dlx")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": q + "-dlx", **args})
    return dead


def cleanup(ch, *queues):
    for q in queues:
        ch.queue_delete(q)


def test_rejected_message_gets_x_death_with_rabbitmq_fields_and_types(ch, qname, field_types):
    dead = dlx_setup(ch, qname)
    ch.exchange_declare(qname + "-src", "direct", auto_delete=True)
    for key in ("k", "cc1", "bcc1"):
        ch.queue_bind(qname, qname + "-src", key)
    props = pika.BasicProperties(
        headers={"h": "v", "CC": ["cc1"], "BCC": ["bcc1"]},
        expiration="60000", priority=3, message_id="mid", correlation_id="cid")
    ch.basic_publish(qname + "-src", "k", b"body", props)
    method, _, _ = get(ch, qname)
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get(ch, dead)
    assert body == b"body"
    assert not method.redelivered
    assert (method.exchange, method.routing_key) == (qname + "-dlx", "k")
    assert props.expiration is None
    assert (props.priority, props.message_id, props.correlation_id) == (3, "mid", "cid")
    h = props.headers
    assert text(h["h"]) == "v"
    assert "BCC" not in h
    assert [text(k) for k in h["CC"]] == ["cc1"]
    assert text(h["x-first-death-reason"]) == "rejected"
    assert text(h["x-first-death-queue"]) == qname
    assert text(h["x-first-death-exchange"]) == qname + "-src"
    (death,) = h["x-death"]
    assert death["count"] == 1
    assert text(death["reason"]) == "rejected"
    assert text(death["queue"]) == qname
    assert text(death["exchange"]) == qname + "-src"
    assert [text(k) for k in death["routing-keys"]] == ["k", "cc1"]
    assert text(death["original-expiration"]) == "60000"
    assert abs(death["time"].timestamp() - time.time()) < 60
    assert (b"l", 1) in field_types, "count is a signed 64-bit integer"
    assert any(kind == b"T" for kind, _ in field_types), "time is a timestamp"
    cleanup(ch, qname, dead)


def test_ttl_expiry_and_dead_letter_routing_key(ch, qname):
    target = qname + "-t"
    ch.queue_declare(target)
    ch.queue_declare(qname, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": target})
    for i in range(3):
        ch.basic_publish("", qname, b"m%d" % i)
    time.sleep(0.5)
    assert ch.queue_declare(qname, passive=True).method.message_count == 0
    bodies = []
    for _ in range(3):
        method, props, body = get(ch, target)
        bodies.append(body)
        assert method.routing_key == target
        (death,) = props.headers["x-death"]
        assert text(death["reason"]) == "expired"
        assert [text(k) for k in death["routing-keys"]] == [qname]
    assert bodies == [b"m0", b"m1", b"m2"]
    cleanup(ch, qname, target)


def test_per_message_expiration_zero_reaches_only_a_ready_consumer(ch, qname):
    ch.queue_declare(qname)
    ch.basic_publish("", qname, b"nobody", pika.BasicProperties(expiration="0"))
    assert ch.basic_get(qname, auto_ack=True)[0] is None
    got = []
    ch.basic_consume(qname, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", qname, b"taken", pika.BasicProperties(expiration="0"))
    deadline = time.time() + 5
    while not got and time.time() < deadline:
        ch.connection.process_data_events(time_limit=0.1)
    assert got == [b"taken"]
    cleanup(ch, qname)


def test_max_length_drop_head_dead_letters_with_reason_maxlen(ch, qname):
    dead = dlx_setup(ch, qname, **{"x-max-length": 2})
    for m in (b"a", b"b", b"c"):
        ch.basic_publish("", qname, m)
    method, props, body = get(ch, dead)
    assert body == b"a"
    assert text(props.headers["x-death"][0]["reason"]) == "maxlen"
    assert ch.queue_declare(qname, passive=True).method.message_count == 2
    cleanup(ch, qname, dead)


def test_reject_publish_nacks_under_confirms(ch, qname):
    ch.queue_declare(qname, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", qname, b"fits")
    with pytest.raises(NackError):
        ch.basic_publish("", qname, b"refused")
    assert ch.queue_declare(qname, passive=True).method.message_count == 1
    cleanup(ch, qname)


def test_priority_queue_order(ch, qname):
    ch.queue_declare(qname, arguments={"x-max-priority": 5})
    for body, p in ((b"p0", 0), (b"none", None), (b"p9", 9), (b"p5", 5), (b"p3", 3)):
        ch.basic_publish("", qname, body, pika.BasicProperties(priority=p))
    order = [ch.basic_get(qname, auto_ack=True)[2] for _ in range(5)]
    assert order == [b"p9", b"p5", b"p3", b"p0", b"none"]
    cleanup(ch, qname)


def test_direct_reply_to_round_trip(conn, qname):
    requester = conn.channel()
    server = conn.channel()
    server.queue_declare(qname)
    replies = []
    requester.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((m, b)),
                            auto_ack=True)
    requester.basic_publish("", qname, b"ping",
                            pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    method, props, body = get(server, qname)
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.")
    server.basic_publish("", props.reply_to, b"pong")
    deadline = time.time() + 5
    while not replies and time.time() < deadline:
        conn.process_data_events(time_limit=0.1)
    (m, b), = replies
    assert b == b"pong"
    assert (m.exchange, m.routing_key) == ("", props.reply_to)
    server.queue_delete(qname)


def test_direct_reply_to_without_consumer_is_refused(ch, qname):
    ch.queue_declare(qname)
    ch.basic_publish("", qname, b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(qname, passive=True)
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


@pytest.mark.parametrize("args,text_", [
    ({"x-message-ttl": -1}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ({"x-expires": 0}, "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_zero,0}}"),
    ({"x-max-length": -1}, "invalid arg 'x-max-length' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ({"x-dead-letter-routing-key": "k"},
     "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': routing_key_but_no_dlx_defined"),
    ({"x-max-priority": 256}, "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {{max_value_exceeded,256}}"),
    ({"x-max-priority": "a"},
     "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': \"expected integer, got longstr\""),
    ({"x-overflow": "foo"}, "invalid arg 'x-overflow' for queue '{q}' in vhost '/': invalid_overflow"),
    ({"x-overflow": 1}, "invalid arg 'x-overflow' for queue '{q}' in vhost '/': {{unacceptable_type,signedint}}"),
    ({"x-single-active-consumer": "true"},
     "invalid arg 'x-single-active-consumer' for queue '{q}' in vhost '/': {{unacceptable_type,longstr}}"),
    ({"x-dead-letter-exchange": 1}, "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
    ({"x-message-ttl": 315360000001},
     "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {{value_too_large,315360000001}}"),
    ({"x-queue-mode": "foo"}, "invalid arg 'x-queue-mode' for queue '{q}' in vhost '/': \"unsupported queue mode 'foo'\""),
])
def test_invalid_queue_arguments(ch, qname, args, text_):
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(qname, arguments=args)
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - " + text_.format(q=qname)


def test_expired_messages_that_route_back_to_their_queue_are_dropped(ch, qname):
    ch.queue_declare(qname, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": ""})
    ch.basic_publish("", qname, b"once")
    time.sleep(0.5)
    assert ch.queue_declare(qname, passive=True).method.message_count == 0
    cleanup(ch, qname)


def test_consumer_x_priority_must_be_an_integer(ch, qname):
    ch.queue_declare(qname)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume(qname, lambda *a: None, arguments={"x-priority": "5"})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (
        "PRECONDITION_FAILED - invalid arg 'x-priority' for queue '%s' in vhost '/': "
        "\"expected integer, got longstr\"" % qname)


def test_single_active_consumer_refuses_exclusive_consumers(ch, qname):
    ch.queue_declare(qname, arguments={"x-single-active-consumer": True})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume(qname, lambda *a: None, exclusive=True)
    assert e.value.reply_code == 403
    assert e.value.reply_text == "ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use" % qname


def test_direct_reply_to_pseudo_queue_can_be_declared(ch):
    ok = ch.queue_declare("amq.rabbitmq.reply-to", passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == ("amq.rabbitmq.reply-to", 0, 1)


def test_a_message_with_any_x_death_gets_no_first_death_headers(ch, qname):
    dead = dlx_setup(ch, qname)
    ch.basic_publish("", qname, b"x", pika.BasicProperties(
        headers={"x-death": [{"queue": qname, "reason": "rejected"}]}))
    method, _, _ = get(ch, qname)
    ch.basic_reject(method.delivery_tag, requeue=False)
    _, props, _ = get(ch, dead)
    (death,) = props.headers["x-death"]
    assert death["count"] == 1
    assert "x-first-death-queue" not in props.headers
    cleanup(ch, qname, dead)
