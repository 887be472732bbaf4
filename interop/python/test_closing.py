"""Closing handshakes that clients race against the broker, driven frame by frame.

pika's own API cannot send a close while one from the broker is in flight, so these tests speak
raw frames (encoded by pika's spec classes) over a socket. Both were found by client suites:
amqp091-go's TestChannelExceptionWithCloseIssue43 and amqplib's high-watermark tests.
"""
import os
import socket
import time

import pika.frame as F
import pika.spec as S


class RawClient:
    def __init__(self):
        self.sock = socket.create_connection(
            (os.environ.get("AMQP_HOST", "127.0.0.1"), int(os.environ.get("AMQP_PORT", "5672")))
        )
        self.sock.settimeout(5)
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        assert isinstance(self.method(), S.Connection.Start)
        self.send(F.Method(0, S.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\0guest\0guest", locale="en_US")))
        assert isinstance(self.method(), S.Connection.Tune)
        self.send(F.Method(0, S.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=0)),
                  F.Method(0, S.Connection.Open(virtual_host="/")))
        assert isinstance(self.method(), S.Connection.OpenOk)

    def send(self, *frames):
        self.sock.sendall(b"".join(f.marshal() for f in frames))

    def frame(self, timeout=5):
        """The next frame, or "EOF", or None if nothing arrives within `timeout`."""
        self.sock.settimeout(timeout)
        while True:
            used, frame = F.decode_frame(self.buf)
            if frame:
                self.buf = self.buf[used:]
                return frame
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not data:
                return "EOF"
            self.buf += data

    def method(self, timeout=5):
        frame = self.frame(timeout)
        assert isinstance(frame, F.Method), frame
        return frame.method


def test_crossing_channel_close_leaves_the_connection_open():
    c = RawClient()
    c.send(F.Method(1, S.Channel.Open()))
    assert isinstance(c.method(), S.Channel.OpenOk)
    # The publish fails asynchronously; the client's close crosses the broker's.
    c.send(F.Method(1, S.Basic.Publish(exchange="no-such-exchange-here", routing_key="")),
           F.Header(1, 0, S.BasicProperties()),
           F.Method(1, S.Channel.Close(200, "bye", 0, 0)))
    close = c.method()
    assert isinstance(close, S.Channel.Close)
    assert close.reply_code == 404
    assert close.reply_text == "NOT_FOUND - no exchange 'no-such-exchange-here' in vhost '/'"
    assert isinstance(c.method(), S.Channel.CloseOk)
    # Our close-ok for the broker's close must not be taken for a method on a closed channel.
    c.send(F.Method(1, S.Channel.CloseOk()))
    assert c.frame(timeout=0.5) is None
    c.send(F.Method(1, S.Channel.Open()))
    assert isinstance(c.method(), S.Channel.OpenOk)
    c.send(F.Method(0, S.Connection.Close(200, "bye", 0, 0)))
    assert isinstance(c.method(), S.Connection.CloseOk)


def test_frames_after_connection_close_are_dropped_until_the_client_hangs_up():
    c = RawClient()
    c.send(F.Method(1, S.Channel.Open()))
    assert isinstance(c.method(), S.Channel.OpenOk)
    c.send(F.Method(0, S.Connection.Close(200, "bye", 0, 0)))
    assert isinstance(c.method(), S.Connection.CloseOk)
    # A client may still be flushing frames it queued before its close: the broker keeps
    # reading (and dropping) them rather than resetting the socket under the writes.
    for _ in range(10):
        c.send(F.Method(1, S.Basic.Publish(exchange="", routing_key="nowhere")),
               F.Header(1, 0, S.BasicProperties()))
        time.sleep(0.02)
    assert c.frame(timeout=0.5) is None
    c.sock.close()
