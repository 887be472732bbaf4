"""amqps through pika: PLAIN over TLS and EXTERNAL with a client certificate (CN=guest).

interop/run.sh makes a CA, server and client certificates with openssl and starts Leveret with
a TLS listener; it exports AMQPS_PORT and TLS_DIR. Against RabbitMQ (no TLS listener set up by
the runner) these tests are skipped, with that reason."""

import os
import ssl
import uuid

import pika
import pytest

PORT = os.environ.get("AMQPS_PORT")
DIR = os.environ.get("TLS_DIR", "")
pytestmark = pytest.mark.skipif(not PORT, reason="no TLS listener configured by the runner (RabbitMQ run)")


def context(with_client_cert):
    ctx = ssl.create_default_context(cafile=os.path.join(DIR, "ca.pem"))
    if with_client_cert:
        ctx.load_cert_chain(os.path.join(DIR, "client.pem"), os.path.join(DIR, "client.key"))
    return ctx


def params(credentials, with_client_cert):
    return pika.ConnectionParameters(
        host="localhost",
        port=int(PORT),
        credentials=credentials,
        ssl_options=pika.SSLOptions(context(with_client_cert), "localhost"),
    )


def round_trip(conn):
    ch = conn.channel()
    q = "tls-" + uuid.uuid4().hex[:8]
    ch.queue_declare(q, auto_delete=True)
    ch.confirm_delivery()
    body = os.urandom(200_000)
    ch.basic_publish("", q, body)
    method, _, got = ch.basic_get(q, auto_ack=True)
    assert got == body
    conn.close()


def test_plain_login_over_tls():
    round_trip(pika.BlockingConnection(params(pika.PlainCredentials("guest", "guest"), False)))


def test_external_login_by_client_certificate():
    round_trip(pika.BlockingConnection(params(pika.credentials.ExternalCredentials(), True)))


def test_wrong_password_over_tls_is_refused():
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params(pika.PlainCredentials("guest", "nope"), False))


def test_untrusted_server_certificate_is_refused_by_the_client():
    ctx = ssl.create_default_context()  # system roots: the test CA is not among them
    p = pika.ConnectionParameters(host="localhost", port=int(PORT), ssl_options=pika.SSLOptions(ctx, "localhost"))
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        pika.BlockingConnection(p)
