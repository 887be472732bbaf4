"""Streams (x-queue-type: stream) and quorum-queue rules over AMQP 0-9-1, through pika.

Run against RabbitMQ 3.10.8 and Leveret alike (interop/run.sh and its --against rabbitmq): the
codes, texts, offsets and headers asserted here are RabbitMQ's. Where Leveret deliberately
differs (behaviour RabbitMQ 3.10 lacks or gets wrong: declare-ok counts, 406 for offsets 3.10
crashes on, nack on a stream, filtering, negative offsets, server-side offset tracking, headers
kept whole), the test says so and checks each broker for its own answer.
"""
import datetime
import os
import time
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from conftest import params

LEVERET = os.environ.get("BROKER_UNDER_TEST") == "leveret"
STREAM = {"x-queue-type": "stream"}


def declare_stream(ch, name, **args):
    return ch.queue_declare(name, durable=True, arguments={**STREAM, **args})


def publish(ch, name, bodies, headers=None, exchange="", key=None):
    ch.confirm_delivery()
    for b in bodies:
        props = pika.BasicProperties(headers=headers) if headers else None
        ch.basic_publish(exchange, key or name, b, props)


def consume(ch, name, args=None, prefetch=100, expect=None, timeout=2.0, ack=True):
    """Deliveries as (exchange, routing key, redelivered, headers, body) until `expect` came
    or `timeout` passed."""
    ch.basic_qos(prefetch_count=prefetch)
    got = []

    def on_message(c, m, p, body):
        got.append((m.exchange, m.routing_key, m.redelivered, p.headers or {}, body))
        if ack:
            c.basic_ack(m.delivery_tag)

    ch.basic_consume(name, on_message, arguments=args or {})
    end = time.time() + timeout
    while time.time() < end and (expect is None or len(got) < expect):
        ch.connection.process_data_events(0.05)
    return got


def offsets(got):
    return [h["x-stream-offset"] for (_, _, _, h, _) in got]


@pytest.fixture
def stream(ch, qname):
    declare_stream(ch, qname)
    yield qname
    try:
        c = pika.BlockingConnection(params())
        c.channel().queue_delete(qname)
        c.close()
    except Exception:
        pass


def closed_with(fn):
    with pytest.raises((ChannelClosedByBroker, ConnectionClosedByBroker)) as e:
        fn()
    return e.value.args[0], e.value.args[1]


@pytest.mark.parametrize(
    "kw,text",
    [
        ({"durable": False}, "invalid property 'non-durable' for queue '{q}' in vhost '/'"),
        ({"exclusive": True}, "invalid property 'exclusive-owner' for queue '{q}' in vhost '/'"),
        ({"auto_delete": True}, "invalid property 'auto-delete' for queue '{q}' in vhost '/'"),
    ],
)
def test_stream_declare_properties(ch, qname, kw, text):
    opts = {"durable": True, **kw}
    code, reply = closed_with(lambda: ch.queue_declare(qname, arguments=STREAM, **opts))
    assert (code, reply) == (406, "PRECONDITION_FAILED - " + text.format(q=qname))


@pytest.mark.parametrize(
    "args,text",
    [
        ({"x-max-age": "10X"}, "invalid arg 'x-max-age' for queue '{q}' in vhost '/': invalid_max_age"),
        ({"x-max-age": "0D"}, "invalid arg 'x-max-age' for queue '{q}' in vhost '/': invalid_max_age"),
        ({"x-max-age": 10}, "invalid arg 'x-max-age' for queue '{q}' in vhost '/': {{unacceptable_type,signedint}}"),
        ({"x-overflow": "drop-head"}, "invalid arg 'x-overflow' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        ({"x-message-ttl": 10}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        ({"x-max-length": 10}, "invalid arg 'x-max-length' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        ({"x-max-length-bytes": -1}, "invalid arg 'x-max-length-bytes' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
        ({"x-stream-max-segment-size-bytes": 3000000001}, "Exceeded max value for x-stream-max-segment-size-bytes"),
        ({"x-initial-cluster-size": 0}, "invalid arg 'x-initial-cluster-size' for queue '{q}' in vhost '/': {{value_zero,0}}"),
    ],
)
def test_stream_declare_arguments(ch, qname, args, text):
    code, reply = closed_with(lambda: declare_stream(ch, qname, **args))
    assert (code, reply) == (406, "PRECONDITION_FAILED - " + text.format(q=qname))


def test_stream_cannot_be_server_named(ch):
    code, reply = closed_with(lambda: ch.queue_declare("", durable=True, arguments=STREAM))
    assert (code, reply) == (
        406, "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_stream_queue")


def test_stream_retention_arguments_are_accepted(ch, qname):
    declare_stream(ch, qname, **{"x-max-age": "7D", "x-max-length-bytes": 100000,
                                 "x-stream-max-segment-size-bytes": 10000})
    ch.queue_delete(qname)


def test_offsets_first_last_next_numeric_and_time(ch, stream):
    publish(ch, stream, [b"m%d" % i for i in range(5)])
    assert offsets(consume(ch, stream, {"x-stream-offset": "first"}, expect=5)) == [0, 1, 2, 3, 4]
    ch2 = ch.connection.channel()
    assert offsets(consume(ch2, stream, {"x-stream-offset": "last"}, expect=1)) == [4]
    ch3 = ch.connection.channel()
    assert offsets(consume(ch3, stream, {"x-stream-offset": 2}, expect=3)) == [2, 3, 4]
    ch4 = ch.connection.channel()
    assert consume(ch4, stream, {"x-stream-offset": 99}, timeout=0.3) == []
    ch5 = ch.connection.channel()
    assert consume(ch5, stream, {}, timeout=0.3) == []
    ch6 = ch.connection.channel()
    assert offsets(consume(ch6, stream, {"x-stream-offset": "7D"}, expect=5)) == [0, 1, 2, 3, 4]
    ch7 = ch.connection.channel()
    old = datetime.datetime(2000, 1, 1)
    assert offsets(consume(ch7, stream, {"x-stream-offset": old}, expect=5)) == [0, 1, 2, 3, 4]
    ch8 = ch.connection.channel()
    future = datetime.datetime(2100, 1, 1)
    assert consume(ch8, stream, {"x-stream-offset": future}, timeout=0.3) == []


def test_next_sees_only_what_comes_after(ch, stream):
    publish(ch, stream, [b"old"])
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume(stream, lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)))
    ch.connection.process_data_events(0.2)
    pub = ch.connection.channel()
    publish(pub, stream, [b"new"])
    end = time.time() + 2
    while time.time() < end and not got:
        ch.connection.process_data_events(0.05)
    assert got == [b"new"]


def test_deliveries_keep_exchange_key_and_get_the_offset_header(ch, stream):
    ch.queue_bind(stream, "amq.direct", "rk")
    publish(ch, stream, [b"x"], headers={"x-stream-offset": "mine", "h": 1}, exchange="amq.direct", key="rk")
    publish(ch, stream, [b"y"])
    got = consume(ch, stream, {"x-stream-offset": "first"}, expect=2)
    assert [(e, k, r, h, b) for (e, k, r, h, b) in got] == [
        ("amq.direct", "rk", False, {"h": 1, "x-stream-offset": 0}, b"x"),
        ("", stream, False, {"x-stream-offset": 1}, b"y"),
    ]


def test_acks_return_credit_and_remove_nothing(ch, stream):
    publish(ch, stream, [b"%d" % i for i in range(6)])
    got = consume(ch, stream, {"x-stream-offset": "first"}, prefetch=2, expect=6)
    assert offsets(got) == [0, 1, 2, 3, 4, 5]
    # Everything is still there for the next reader.
    ch2 = ch.connection.channel()
    assert offsets(consume(ch2, stream, {"x-stream-offset": "first"}, expect=6)) == [0, 1, 2, 3, 4, 5]


def test_without_acks_a_consumer_gets_its_prefetch(ch, stream):
    publish(ch, stream, [b"%d" % i for i in range(6)])
    got = consume(ch, stream, {"x-stream-offset": "first"}, prefetch=2, ack=False, timeout=0.5)
    assert offsets(got) == [0, 1]


def test_get_and_purge_are_refused_with_540(conn, stream):
    for op, what in [(lambda c: c.basic_get(stream), "basic.get"),
                     (lambda c: c.queue_purge(stream), "queue.purge")]:
        c = pika.BlockingConnection(params())
        code, reply = closed_with(lambda: op(c.channel()))
        assert (code, reply) == (
            540, f"NOT_IMPLEMENTED - {what} not supported by stream queues queue '{stream}' in vhost '/'")


def test_consume_rules_in_rabbitmqs_order(stream):
    def attempt(prefetch=0, glob=0, **kw):
        c = pika.BlockingConnection(params())
        chan = c.channel()
        if prefetch:
            chan.basic_qos(prefetch_count=prefetch)
        if glob:
            chan.basic_qos(prefetch_count=glob, global_qos=True)

        def go():
            chan.basic_consume(stream, lambda *a: None, **kw)
            c.process_data_events(0.3)
        try:
            return closed_with(go)
        finally:
            if c.is_open:
                c.close()

    res = f"queue '{stream}' in vhost '/'"
    assert attempt(auto_ack=True) == (
        406, f"PRECONDITION_FAILED - consumer prefetch count is not set for '{res}'")
    assert attempt(arguments={"x-priority": 1}) == (
        406, f"PRECONDITION_FAILED - invalid arg 'x-priority' for {res} of queue type rabbit_stream_queue")
    assert attempt(prefetch=5, auto_ack=True) == (
        540, f"NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues {res}")
    assert attempt(prefetch=5, glob=5) == (540, f"NOT_IMPLEMENTED - {res} does not support global qos")
    assert attempt(prefetch=5, arguments={"x-stream-offset": "0s"}) == (
        406, f"PRECONDITION_FAILED - invalid arg 'x-stream-offset' for {res}: "
        '{invalid_stream_offset_arg,{longstr,<<"0s">>}}')
    if LEVERET:
        # RabbitMQ 3.10 crashes on these (541); Leveret answers as 4.x does.
        assert attempt(prefetch=5, arguments={"x-stream-offset": "bogus"}) == (
            406, f"PRECONDITION_FAILED - invalid arg 'x-stream-offset' for {res}: "
            '{invalid_stream_offset_arg,{longstr,<<"bogus">>}}')


def test_declare_ok_counts_the_messages_stored(ch, stream):
    publish(ch, stream, [b"a", b"b", b"c"])
    count = declare_stream(ch, stream).method.message_count
    # RabbitMQ 3.10 answers 0 for a stream; 4.x and Leveret the count stored.
    assert count == (3 if LEVERET else 0)


def test_stream_keeps_every_message_across_connections(stream):
    c = pika.BlockingConnection(params())
    publish(c.channel(), stream, [b"p%d" % i for i in range(50)])
    c.close()
    c = pika.BlockingConnection(params())
    got = consume(c.channel(), stream, {"x-stream-offset": "first"}, expect=50)
    assert [b for (_, _, _, _, b) in got] == [b"p%d" % i for i in range(50)]
    c.close()


@pytest.mark.skipif(not LEVERET, reason="Leveret's own: RabbitMQ 3.10 has no 0-9-1 filtering")
def test_filtering_by_value_and_unfiltered(ch, stream):
    for value in ["ca", "tx", None, "ca"]:
        publish(ch, stream, [(value or "none").encode()],
                headers={"x-stream-filter-value": value} if value else None)
    got = consume(ch, stream, {"x-stream-offset": "first", "x-stream-filter": "ca"}, expect=2)
    assert [b for (*_, b) in got] == [b"ca", b"ca"]
    ch2 = ch.connection.channel()
    got = consume(ch2, stream, {"x-stream-offset": "first", "x-stream-filter": ["tx"],
                                "x-stream-match-unfiltered": True}, expect=2)
    assert [b for (*_, b) in got] == [b"tx", b"none"]


@pytest.mark.skipif(not LEVERET, reason="Leveret's own (and LavinMQ's): negative offsets")
def test_negative_offsets_count_back_from_the_end(ch, stream):
    publish(ch, stream, [b"%d" % i for i in range(10)])
    assert offsets(consume(ch, stream, {"x-stream-offset": -3}, expect=3)) == [7, 8, 9]


@pytest.mark.skipif(not LEVERET, reason="Leveret's own: RabbitMQ drops array and table headers")
def test_headers_are_kept_whole(ch, stream):
    publish(ch, stream, [b"x"], headers={"a": [1, 2], "t": {"k": "v"}})
    got = consume(ch, stream, {"x-stream-offset": "first"}, expect=1)
    assert got[0][3] == {"a": [1, 2], "t": {"k": b"v"}, "x-stream-offset": 0} or \
        got[0][3] == {"a": [1, 2], "t": {"k": "v"}, "x-stream-offset": 0}


@pytest.mark.skipif(not LEVERET, reason="Leveret's own (and LavinMQ's): server-side offset tracking")
def test_a_named_consumer_resumes_after_its_last_ack(stream):
    c = pika.BlockingConnection(params())
    publish(c.channel(), stream, [b"%d" % i for i in range(10)])
    chan = c.channel()
    chan.basic_qos(prefetch_count=100)
    seen = []

    def first_run(ch_, m, p, body):
        seen.append(p.headers["x-stream-offset"])
        if len(seen) <= 4:
            ch_.basic_ack(m.delivery_tag)

    chan.basic_consume(stream, first_run, consumer_tag="reader-1",
                       arguments={"x-stream-offset": "first"})
    end = time.time() + 2
    while time.time() < end and len(seen) < 10:
        c.process_data_events(0.05)
    c.close()
    time.sleep(1.5)  # the broker saves tracked offsets within a second
    c = pika.BlockingConnection(params())
    chan = c.channel()
    chan.basic_qos(prefetch_count=100)
    again = []
    chan.basic_consume(stream, lambda ch_, m, p, b: again.append(p.headers["x-stream-offset"]),
                       consumer_tag="reader-1")
    end = time.time() + 2
    while time.time() < end and len(again) < 6:
        c.process_data_events(0.05)
    c.close()
    assert again == [4, 5, 6, 7, 8, 9]


@pytest.mark.skipif(not LEVERET, reason="RabbitMQ 3.10 closes the connection (540) on a stream nack")
def test_nack_and_reject_only_return_credit(ch, stream):
    publish(ch, stream, [b"%d" % i for i in range(4)])
    ch.basic_qos(prefetch_count=1)
    got = []

    def on_message(c, m, p, body):
        got.append(p.headers["x-stream-offset"])
        if len(got) % 2:
            c.basic_nack(m.delivery_tag, requeue=True)
        else:
            c.basic_reject(m.delivery_tag, requeue=False)

    ch.basic_consume(stream, on_message, arguments={"x-stream-offset": "first"})
    end = time.time() + 2
    while time.time() < end and len(got) < 4:
        ch.connection.process_data_events(0.05)
    assert got == [0, 1, 2, 3]


# Quorum queues on one node.

def test_quorum_refuses_global_qos(qname):
    c = pika.BlockingConnection(params())
    chan = c.channel()
    chan.queue_declare(qname, durable=True, arguments={"x-queue-type": "quorum"})
    chan.basic_qos(prefetch_count=5, global_qos=True)

    def go():
        chan.basic_consume(qname, lambda *a: None)
        c.process_data_events(0.3)
    assert closed_with(go) == (
        540, f"NOT_IMPLEMENTED - queue '{qname}' in vhost '/' does not support global qos")
    c = pika.BlockingConnection(params())
    c.channel().queue_delete(qname)
    c.close()


def test_quorum_counts_deliveries_in_a_header(ch, qname):
    ch.queue_declare(qname, durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    ch.basic_publish("", qname, b"x", pika.BasicProperties(headers={"a": 1}))
    seen = []
    for _ in range(3):
        m, p, _ = ch.basic_get(qname)
        seen.append((m.redelivered, p.headers))
        ch.basic_nack(m.delivery_tag, requeue=True)
    assert seen == [(False, {"a": 1, "x-delivery-count": 0}),
                    (True, {"a": 1, "x-delivery-count": 1}),
                    (True, {"a": 1, "x-delivery-count": 2})]
    m, _, _ = ch.basic_get(qname, auto_ack=True)
    # A first delivery to a consumer carries no count; a redelivery does.
    ch.basic_publish("", qname, b"y")
    ch.basic_qos(prefetch_count=1)
    got = []

    def on_message(c, m, p, body):
        got.append((m.redelivered, p.headers))
        if len(got) == 1:
            c.basic_nack(m.delivery_tag, requeue=True)
        else:
            c.basic_ack(m.delivery_tag)
    ch.basic_consume(qname, on_message)
    end = time.time() + 2
    while time.time() < end and len(got) < 2:
        ch.connection.process_data_events(0.05)
    assert got == [(False, None), (True, {"x-delivery-count": 1})]
    ch.queue_delete(qname)


def test_quorum_keeps_transient_messages(ch, qname):
    ch.queue_declare(qname, durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    ch.basic_publish("", qname, b"x", pika.BasicProperties(delivery_mode=1))
    assert ch.queue_declare(qname, passive=True).method.message_count == 1
    ch.queue_delete(qname)


def test_quorum_conditional_delete_is_refused(qname):
    c = pika.BlockingConnection(params())
    chan = c.channel()
    chan.queue_declare(qname, durable=True, arguments={"x-queue-type": "quorum"})
    code, reply = closed_with(lambda: chan.queue_delete(qname, if_unused=True))
    assert (code, reply) == (
        540, f"NOT_IMPLEMENTED - cannot delete queue '{qname}' in vhost '/'. queue.delete "
        "operations with if-unused flag set are not supported by quorum queues")
    c = pika.BlockingConnection(params())
    c.channel().queue_delete(qname)
    c.close()
