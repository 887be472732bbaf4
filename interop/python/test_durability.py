"""Durability through pika: the broker is restarted between publish and consume.

The suite starts (and restarts) its own Leveret from $LEVERET_BIN on an ephemeral port, with a
fresh data directory; interop/run.sh sets it. Against RabbitMQ these tests are skipped, with the
reason, because the suite cannot restart a system RabbitMQ.
"""
import os
import re
import signal
import subprocess
import time

import pika
import pytest

BIN = os.environ.get("LEVERET_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="restarts its own broker: needs LEVERET_BIN (Leveret only)")


class Broker:
    def __init__(self, data_dir, log):
        self.log = log
        self.proc = subprocess.Popen(
            [BIN, "--bind", "127.0.0.1", "--port", "0", "--management-port", "0", "--prometheus-port", "0", "--data-dir", str(data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "w"),
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            m = re.search(r"ready for AMQP.*local=[0-9.]+:(\d+)", open(log).read())
            if m:
                self.port = int(m.group(1))
                return
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("broker did not start: " + open(log).read())

    def connect(self):
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port))

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        assert self.proc.wait(timeout=15) in (0, -signal.SIGKILL)


def test_persistent_messages_survive_a_restart(tmp_path):
    b = Broker(tmp_path / "data", tmp_path / "1.log")
    c = b.connect()
    ch = c.channel()
    ch.queue_declare("durable-q", durable=True)
    ch.queue_declare("transient-q")
    ch.queue_bind("durable-q", "amq.direct", "k")
    ch.confirm_delivery()
    for i in range(100):
        ch.basic_publish("amq.direct", "k", f"m{i}".encode(),
                         pika.BasicProperties(delivery_mode=2, headers={"i": i}, content_type="text/plain"))
    ch.basic_publish("", "durable-q", b"transient", pika.BasicProperties(delivery_mode=1))
    ch.basic_publish("", "transient-q", b"lost", pika.BasicProperties(delivery_mode=2))
    m, _, _ = ch.basic_get("durable-q")  # delivered, not acked: comes back redelivered
    assert m.delivery_tag == 1
    c.close()
    b.stop()

    b = Broker(tmp_path / "data", tmp_path / "2.log")
    try:
        ch = b.connect().channel()
        got = []
        while True:
            m, props, body = ch.basic_get("durable-q", auto_ack=True)
            if m is None:
                break
            got.append((body.decode(), m.redelivered, props.headers["i"], props.content_type))
        assert got == [(f"m{i}", i == 0, i, "text/plain") for i in range(100)]
        ch.basic_publish("amq.direct", "k", b"binding kept")
        assert ch.basic_get("durable-q", auto_ack=True)[2] == b"binding kept"
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("transient-q", passive=True)
        assert e.value.reply_code == 404
    finally:
        b.stop()


def test_confirmed_messages_survive_sigkill(tmp_path):
    b = Broker(tmp_path / "data", tmp_path / "1.log")
    ch = b.connect().channel()
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    for i in range(500):
        ch.basic_publish("", "q", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    b.stop(signal.SIGKILL)

    b = Broker(tmp_path / "data", tmp_path / "2.log")
    try:
        ok = b.connect().channel().queue_declare("q", durable=True).method
        assert ok.message_count == 500
    finally:
        b.stop()
