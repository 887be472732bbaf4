"""Reply codes, texts and scopes (channel vs connection) as RabbitMQ 3.10 gives them."""
import pika
import pytest

from conftest import params


def channel_error(conn, fn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        fn(ch)
    assert conn.is_open, "a channel error leaves the connection open"
    return e.value.reply_code, e.value.reply_text


def connection_error(fn):
    c = pika.BlockingConnection(params())
    ch = c.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        fn(ch)
        c.process_data_events(time_limit=1)
    return e.value.reply_code, e.value.reply_text


def test_passive_declare_missing_queue(conn, qname):
    assert channel_error(conn, lambda ch: ch.queue_declare(qname, passive=True)) == \
        (404, f"NOT_FOUND - no queue '{qname}' in vhost '/'")


def test_publish_to_missing_exchange(conn, qname):
    def go(ch):
        ch.basic_publish(qname, "k", b"x")
        ch.queue_declare(qname, passive=True)
    assert channel_error(conn, go) == (404, f"NOT_FOUND - no exchange '{qname}' in vhost '/'")


def test_inequivalent_arg(conn, qname):
    conn.channel().queue_declare(qname, arguments={"x-message-ttl": 1000})
    code, text = channel_error(conn, lambda ch: ch.queue_declare(qname, arguments={"x-message-ttl": 2000}))
    assert code == 406
    assert text == (f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{qname}' "
                    "in vhost '/': received '2000' but current is '1000'")
    conn.channel().queue_delete(qname)


def test_exclusive_queue_from_other_connection(conn, qname):
    other = pika.BlockingConnection(params())
    other.channel().queue_declare(qname, exclusive=True)
    code, text = channel_error(conn, lambda ch: ch.queue_declare(qname))
    assert code == 405
    assert text.startswith(f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{qname}' in vhost '/'")
    other.close()


def test_unknown_delivery_tag(conn):
    def go(ch):
        ch.basic_ack(999)
        ch.queue_declare("", exclusive=True)
    assert channel_error(conn, go) == (406, "PRECONDITION_FAILED - unknown delivery tag 999")


def test_reserved_prefix(conn):
    assert channel_error(conn, lambda ch: ch.exchange_declare("amq.example", "direct")) == \
        (403, "ACCESS_REFUSED - exchange name 'amq.example' contains reserved prefix 'amq.*'")


def test_bind_to_default_exchange(conn, qname):
    conn.channel().queue_declare(qname)
    assert channel_error(conn, lambda ch: ch.queue_bind(qname, "", "k")) == \
        (403, "ACCESS_REFUSED - operation not permitted on the default exchange")
    conn.channel().queue_delete(qname)


def test_exclusive_consumer(conn, qname):
    ch = conn.channel()
    ch.queue_declare(qname)
    ch.basic_consume(qname, lambda *a: None, exclusive=True)
    assert channel_error(conn, lambda c: c.basic_consume(qname, lambda *a: None)) == \
        (403, f"ACCESS_REFUSED - queue '{qname}' in vhost '/' in exclusive use")
    conn.channel().queue_delete(qname)


def test_tx_after_confirm(conn):
    def go(ch):
        ch.confirm_delivery()
        ch.tx_select()
    assert channel_error(conn, go) == (406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")


def test_prefetch_size_is_connection_error():
    assert connection_error(lambda ch: ch.basic_qos(prefetch_size=1000)) == \
        (540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)")


def test_recover_without_requeue_is_connection_error():
    assert connection_error(lambda ch: ch.basic_recover(requeue=False)) == \
        (540, "NOT_IMPLEMENTED - requeue=false")


def test_flow_inactive_is_connection_error():
    assert connection_error(lambda ch: ch.flow(False)) == (540, "NOT_IMPLEMENTED - active=false")


def test_immediate_is_connection_error():
    def go(ch):
        # pika's public API has no immediate flag; send the method as a client of old would.
        ch._impl._send_method(pika.spec.Basic.Publish(exchange="", routing_key="x", immediate=True),
                              (pika.BasicProperties(), b"x"))
        ch.queue_declare("", exclusive=True)
    code, text = connection_error(go)
    assert code == 540 and text.startswith("NOT_IMPLEMENTED - immediate=true")


def test_wrong_password():
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        pika.BlockingConnection(params(credentials=pika.PlainCredentials("guest", "wrong")))
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(e.value)


def test_unknown_vhost():
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        pika.BlockingConnection(params(virtual_host="nonexistent-vhost"))
    assert "NOT_ALLOWED - vhost nonexistent-vhost not found" in str(e.value)


def test_deleting_and_unbinding_missing_things_succeeds(ch, qname):
    ch.exchange_delete(qname + "-no-such-exchange")
    assert ch.queue_delete(qname + "-no-such-queue").method.message_count == 0
    ch.queue_unbind(qname + "-no-such-queue", "amq.direct", "k")
    ch.queue_declare(qname)
    ch.queue_unbind(qname, "amq.direct", "never-bound")
    ch.queue_delete(qname)


def test_delete_if_empty_text(conn, qname):
    ch = conn.channel()
    ch.queue_declare(qname)
    ch.confirm_delivery()
    ch.basic_publish("", qname, b"x")
    assert channel_error(conn, lambda c: c.queue_delete(qname, if_empty=True)) == \
        (406, f"PRECONDITION_FAILED - queue '{qname}' in vhost '/' not empty")
    conn.channel().queue_delete(qname)


def test_system_exchange_cannot_be_deleted(conn):
    assert channel_error(conn, lambda ch: ch.exchange_delete("amq.direct")) == \
        (403, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed")


def test_invalid_x_match(conn, qname):
    conn.channel().queue_declare(qname)
    assert channel_error(conn, lambda ch: ch.queue_bind(qname, "amq.headers", arguments={"x-match": "foo"})) == \
        (406, 'PRECONDITION_FAILED - Invalid x-match field value <<"foo">>; expected all, any, all-with-x, or any-with-x')
    conn.channel().queue_delete(qname)


def test_unknown_exchange_type_is_connection_error(qname):
    assert connection_error(lambda ch: ch.exchange_declare(qname, "foo")) == \
        (503, "COMMAND_INVALID - invalid exchange type 'foo'")


def test_inequivalent_missing_argument_names_the_type(conn, qname):
    conn.channel().queue_declare(qname, arguments={"x-max-length": 10})
    code, text = channel_error(conn, lambda ch: ch.queue_declare(qname))
    assert (code, text) == (406, f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{qname}' "
                                 "in vhost '/': received none but current is the value '10' of type 'signedint'")
    conn.channel().queue_delete(qname)


def test_user_id_must_match_the_authenticated_user(ch, qname):
    ch.queue_declare(qname)
    ch.basic_publish("", qname, b"mine", pika.BasicProperties(user_id="guest"))
    ch.basic_publish("", qname, b"theirs", pika.BasicProperties(user_id="someoneelse"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(qname, passive=True)
    assert e.value.reply_code == 406
    assert e.value.reply_text == (
        "PRECONDITION_FAILED - user_id property set to 'someoneelse' but authenticated user was 'guest'")
