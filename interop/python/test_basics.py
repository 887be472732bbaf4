"""Routing, consuming, acknowledgements, confirms and transactions through pika."""
import os
import time

import pika
import pytest

from conftest import params


def drain(ch, q):
    out = []
    while True:
        m, props, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append(body.decode())


def test_server_properties_and_capabilities(conn):
    props = conn._impl.server_properties
    caps = props["capabilities"]
    for cap in ["publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
                "authentication_failure_close", "per_consumer_qos", "direct_reply_to"]:
        assert caps[cap] is True, cap
    # Clients and their suites (amqp091-go, amqplib) check the product name.
    assert props["product"] == "RabbitMQ"
    assert props["version"] == "3.10.8"
    if os.environ.get("BROKER_UNDER_TEST") == "leveret":
        assert props["platform"].startswith("Leveret "), props["platform"]


def test_default_direct_fanout_topic(ch, qname):
    qs = {k: f"{qname}-{k}" for k in ["d", "f", "t"]}
    for q in qs.values():
        ch.queue_declare(q, auto_delete=False)
    ch.queue_bind(qs["d"], "amq.direct", "k")
    ch.queue_bind(qs["f"], "amq.fanout")
    ch.queue_bind(qs["t"], "amq.topic", "a.*.#")
    ch.basic_publish("amq.direct", "k", b"d")
    ch.basic_publish("amq.fanout", "zzz", b"f")
    ch.basic_publish("amq.topic", "a.b", b"t1")
    ch.basic_publish("amq.topic", "a", b"t2")
    ch.basic_publish("amq.topic", "a.b.c.d", b"t3")
    ch.basic_publish("", qs["d"], b"default")
    assert drain(ch, qs["d"]) == ["d", "default"]
    assert drain(ch, qs["f"]) == ["f"]
    assert drain(ch, qs["t"]) == ["t1", "t3"]
    for q in qs.values():
        ch.queue_delete(q)


def test_headers_exchange_typed_match(ch, qname):
    ch.queue_declare(qname)
    ch.queue_bind(qname, "amq.headers", arguments={"x-match": "any", "a": 1, "b": "two"})
    ch.basic_publish("amq.headers", "", b"int", pika.BasicProperties(headers={"a": 1}))
    ch.basic_publish("amq.headers", "", b"str", pika.BasicProperties(headers={"a": "1"}))
    ch.basic_publish("amq.headers", "", b"b", pika.BasicProperties(headers={"b": "two"}))
    ch.basic_publish("amq.headers", "", b"none", pika.BasicProperties(headers={"c": 1}))
    assert drain(ch, qname) == ["int", "b"]
    ch.queue_delete(qname)


def test_mandatory_return_comes_before_confirm(ch, qname):
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as e:
        ch.basic_publish("", qname + "-nowhere", b"x", mandatory=True)
    returned = e.value.messages[0]
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"


def test_exchange_to_exchange_and_alternate_exchange(ch, qname):
    ch.exchange_declare(qname + "-src", "topic", auto_delete=True)
    ch.exchange_declare(qname + "-dst", "fanout", auto_delete=True)
    ch.exchange_declare(qname + "-ae", "fanout", auto_delete=True)
    ch.exchange_declare(qname + "-main", "direct", auto_delete=True,
                        arguments={"alternate-exchange": qname + "-ae"})
    ch.exchange_bind(qname + "-dst", qname + "-src", "#")
    ch.queue_declare(qname)
    ch.queue_declare(qname + "-alt")
    ch.queue_bind(qname, qname + "-dst")
    ch.queue_bind(qname + "-alt", qname + "-ae")
    ch.basic_publish(qname + "-src", "any.key", b"e2e")
    ch.basic_publish(qname + "-main", "unbound", b"alt")
    assert drain(ch, qname) == ["e2e"]
    m, _, body = ch.basic_get(qname + "-alt", auto_ack=True)
    assert body == b"alt" and m.exchange == qname + "-main"
    ch.queue_delete(qname)
    ch.queue_delete(qname + "-alt")


def test_cc_and_bcc(ch, qname):
    for s in ["", "-cc", "-bcc"]:
        ch.queue_declare(qname + s)
    ch.basic_publish("", qname, b"m", pika.BasicProperties(headers={"CC": [qname + "-cc"], "BCC": [qname + "-bcc"]}))
    for s in ["", "-cc", "-bcc"]:
        m, props, body = ch.basic_get(qname + s, auto_ack=True)
        assert body == b"m", s
        assert "CC" in props.headers and "BCC" not in props.headers
        ch.queue_delete(qname + s)


def test_declare_ok_counts_and_get_counts(ch, qname):
    ch.queue_declare(qname)
    ch.confirm_delivery()  # RabbitMQ counts a publish only once its queue has it
    for i in range(3):
        ch.basic_publish("", qname, str(i).encode())
    ok = ch.queue_declare(qname, passive=True).method
    assert ok.message_count == 3 and ok.consumer_count == 0
    m, _, _ = ch.basic_get(qname)
    assert m.message_count == 2
    assert ch.queue_purge(qname).method.message_count == 2
    assert ch.queue_declare(qname, passive=True).method.message_count == 0
    ch.basic_publish("", qname, b"x")
    assert ch.queue_delete(qname).method.message_count == 1


def test_server_named_queue_and_last_queue_shortcut(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-")
    ch.queue_bind("", "amq.direct", "shortcut")
    ch.confirm_delivery()
    ch.basic_publish("amq.direct", "shortcut", b"x")
    m, _, body = ch.basic_get("", auto_ack=True)
    assert body == b"x" and m.routing_key == "shortcut"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("", passive=True)
    assert e.value.args == (404, "NOT_FOUND - no queue '' in vhost '/'")


def test_requeue_restores_order_with_redelivered(ch, qname):
    ch.queue_declare(qname)
    for b in [b"a", b"b", b"c"]:
        ch.basic_publish("", qname, b)
    a = ch.basic_get(qname)[0]
    b = ch.basic_get(qname)[0]
    ch.basic_nack(b.delivery_tag, requeue=True)
    ch.basic_reject(a.delivery_tag, requeue=True)
    got = []
    while True:
        m, _, body = ch.basic_get(qname, auto_ack=True)
        if m is None:
            break
        got.append((body, m.redelivered))
    assert got == [(b"a", True), (b"b", True), (b"c", False)]
    ch.queue_delete(qname)


def test_qos_limits_unacked_and_ack_multiple(ch, qname):
    ch.queue_declare(qname)
    for i in range(10):
        ch.basic_publish("", qname, str(i).encode())
    ch.basic_qos(prefetch_count=3)
    got = []
    ch.basic_consume(qname, lambda c, m, p, b: got.append(m))
    conn = ch.connection
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 3
    ok = ch.queue_declare(qname, passive=True).method
    assert ok.message_count == 7 and ok.consumer_count == 1
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 6
    ch.basic_ack(0, multiple=True)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 9


def test_channel_close_requeues_unacked_in_order(conn, qname):
    ch = conn.channel()
    ch.queue_declare(qname)
    for b in [b"1", b"2", b"3"]:
        ch.basic_publish("", qname, b)
    tags = [ch.basic_get(qname)[0].delivery_tag for _ in range(3)]
    assert tags == [1, 2, 3]
    ch.close()
    ch2 = conn.channel()
    got = []
    while True:
        m, _, body = ch2.basic_get(qname, auto_ack=True)
        if m is None:
            break
        assert m.redelivered
        got.append(body)
    assert got == [b"1", b"2", b"3"]
    ch2.queue_delete(qname)


def test_recover_requeues(ch, qname):
    ch.queue_declare(qname)
    ch.basic_publish("", qname, b"x")
    ch.basic_get(qname)
    ch.basic_recover(requeue=True)
    m, _, _ = ch.basic_get(qname, auto_ack=True)
    assert m.redelivered
    ch.queue_delete(qname)


def test_server_cancel_when_queue_deleted(conn, qname):
    ch = conn.channel()
    ch.queue_declare(qname)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame))
    ch.basic_consume(qname, lambda *a: None, consumer_tag="ctag")
    other = conn.channel()
    other.queue_delete(qname)
    conn.process_data_events(time_limit=0.5)
    assert cancelled and cancelled[0].method.consumer_tag == "ctag"


def test_auto_delete_after_last_consumer(ch, qname):
    ch.queue_declare(qname, auto_delete=True)
    tag = ch.basic_consume(qname, lambda *a: None)
    ch.basic_cancel(tag)
    time.sleep(0.1)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(qname, passive=True)
    assert e.value.reply_code == 404


def test_exclusive_queue_deleted_with_connection(qname):
    c1 = pika.BlockingConnection(params())
    c1.channel().queue_declare(qname, exclusive=True)
    c1.close()
    time.sleep(0.1)
    c2 = pika.BlockingConnection(params())
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        c2.channel().queue_declare(qname, passive=True)
    assert e.value.reply_code == 404
    c2.close()


def test_confirms_ack_everything(ch, qname):
    ch.queue_declare(qname)
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish("", qname, str(i).encode())
    assert ch.queue_declare(qname, passive=True).method.message_count == 200
    ch.queue_delete(qname)


def test_transactions(ch, qname):
    ch.queue_declare(qname)
    ch.tx_select()
    ch.basic_publish("", qname, b"rolled-back")
    ch.tx_rollback()
    ch.basic_publish("", qname, b"committed")
    assert ch.queue_declare(qname, passive=True).method.message_count == 0
    ch.tx_commit()
    assert ch.queue_declare(qname, passive=True).method.message_count == 1
    ch.queue_delete(qname)


def test_large_message_round_trip(ch, qname):
    ch.queue_declare(qname)
    body = bytes(range(256)) * 4096
    ch.basic_publish("", qname, body)
    _, _, got = ch.basic_get(qname, auto_ack=True)
    assert got == body
    ch.queue_delete(qname)


def test_auto_delete_exchange_goes_with_its_last_binding(ch, qname):
    ch.exchange_declare(qname + "-ad", "direct", auto_delete=True)
    ch.queue_declare(qname)
    ch.queue_bind(qname, qname + "-ad", "k")
    ch.exchange_declare(qname + "-ad", "direct", passive=True)
    ch.queue_unbind(qname, qname + "-ad", "k")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(qname + "-ad", "direct", passive=True)
    assert e.value.reply_code == 404


def test_internal_exchange_refuses_publishes(conn, qname):
    ch = conn.channel()
    ch.exchange_declare(qname + "-int", "fanout", internal=True, auto_delete=True)
    ch.basic_publish(qname + "-int", "", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("", exclusive=True)
    assert e.value.args == (403, f"ACCESS_REFUSED - cannot publish to internal exchange '{qname}-int' in vhost '/'")
