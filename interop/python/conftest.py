"""pika suite: the broker under test is at AMQP_HOST:AMQP_PORT (started by interop/run.sh).

The same suite runs against RabbitMQ (`interop/run.sh --against rabbitmq`), which is how the
expected codes and texts were checked.
"""
import os
import uuid

import pika
import pytest

HOST = os.environ.get("AMQP_HOST", "127.0.0.1")
PORT = int(os.environ.get("AMQP_PORT", "5672"))


def params(**kw):
    kw.setdefault("heartbeat", 30)
    return pika.ConnectionParameters(HOST, PORT, **kw)


@pytest.fixture
def conn():
    c = pika.BlockingConnection(params())
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def qname():
    """A fresh queue name, so tests never see each other's queues."""
    return "test-" + uuid.uuid4().hex[:12]
