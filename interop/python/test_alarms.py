"""Memory alarm through pika: a publishing connection gets connection.blocked with RabbitMQ's
reason, nothing it published is lost, and connection.unblocked follows when the alarm clears.

The alarm is raised by lowering the memory high watermark on the running broker: through the
HTTP API (what `leveretctl set_vm_memory_high_watermark` does) for Leveret, with rabbitmqctl for
RabbitMQ."""

import base64
import json
import os
import subprocess
import time
import urllib.request

import pika

from conftest import params

BROKER = os.environ.get("BROKER_UNDER_TEST", "leveret")
MGMT_PORT = os.environ.get("MGMT_PORT", "15672")


def set_watermark(low):
    if BROKER == "rabbitmq":
        args = ["absolute", "10MB"] if low else ["0.4"]
        subprocess.run(["rabbitmqctl", "-q", "set_vm_memory_high_watermark", *args], check=True)
        return
    body = json.dumps({"bytes": 1 if low else 1 << 50}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{MGMT_PORT}/api/leveret/vm_memory_high_watermark", data=body, method="PUT"
    )
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    urllib.request.urlopen(request).read()


def wait_for(conn, predicate, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline and not predicate():
        conn.process_data_events(time_limit=0.2)
    return predicate()


def test_publishers_are_blocked_and_unblocked_without_losing_messages(qname):
    publisher = pika.BlockingConnection(params())
    events = []
    publisher.add_on_connection_blocked_callback(lambda _c, frame: events.append(("blocked", frame.method.reason)))
    publisher.add_on_connection_unblocked_callback(lambda _c, _f: events.append(("unblocked", None)))
    ch = publisher.channel()
    ch.queue_declare(qname, auto_delete=True)
    ch.basic_publish("", qname, b"before")
    try:
        set_watermark(low=True)
        # RabbitMQ blocks a connection when it next publishes; Leveret one that has published.
        ch.basic_publish("", qname, b"during")
        assert wait_for(publisher, lambda: events), "no connection.blocked"
        assert events[0] == ("blocked", "low on memory")
    finally:
        set_watermark(low=False)
    assert wait_for(publisher, lambda: ("unblocked", None) in events), events
    ch.basic_publish("", qname, b"after")
    bodies = []
    deadline = time.time() + 10
    while len(bodies) < 3 and time.time() < deadline:
        _, _, body = ch.basic_get(qname, auto_ack=True)
        if body is None:
            publisher.process_data_events(time_limit=0.1)
        else:
            bodies.append(body)
    assert bodies == [b"before", b"during", b"after"]
    publisher.close()
