//! A raw AMQP client for tests: frames written by hand, so a test can send what no client
//! library would (too-deep tables, bad frames) and read exactly what the broker answers.

use std::time::Duration;

use bytes::BytesMut;
use leveret::protocol::codec::{decode_frame, encode_method, PROTOCOL_HEADER};
use leveret::protocol::{channel, connection, FieldTable, Frame, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TestBroker;

pub struct RawClient {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl RawClient {
    pub async fn connect(b: &TestBroker) -> Self {
        Self::connect_to(b.addr).await
    }

    pub async fn connect_to(addr: std::net::SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Connect and complete the handshake with the given tune-ok values (0: the broker's).
    pub async fn open(b: &TestBroker, channel_max: u16, heartbeat: u16) -> Self {
        Self::open_tuned(b, channel_max, 4096, heartbeat).await
    }

    /// [`RawClient::open`] with a frame_max too.
    pub async fn open_tuned(
        b: &TestBroker,
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    ) -> Self {
        Self::open_at(b.addr, channel_max, frame_max, heartbeat).await
    }

    /// [`RawClient::open_tuned`] against any address (a broker process).
    pub async fn open_at(
        addr: std::net::SocketAddr,
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    ) -> Self {
        let mut c = Self::connect_to(addr).await;
        c.stream.write_all(PROTOCOL_HEADER).await.unwrap();
        assert!(matches!(
            c.method().await,
            Method::Connection(connection::AMQPMethod::Start(_))
        ));
        c.send(
            0,
            Method::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })),
        )
        .await;
        let Method::Connection(connection::AMQPMethod::Tune(tune)) = c.method().await else {
            panic!("expected connection.tune");
        };
        // 0 takes the broker's value, as clients do (RabbitMQ refuses a 0 when it has a limit).
        let pick = |ours: u32, theirs: u32| if ours == 0 { theirs } else { ours };
        c.send(
            0,
            Method::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: pick(u32::from(channel_max), u32::from(tune.channel_max)) as u16,
                frame_max: pick(frame_max, tune.frame_max),
                heartbeat,
            })),
        )
        .await;
        c.send(
            0,
            Method::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await;
        assert!(matches!(
            c.method().await,
            Method::Connection(connection::AMQPMethod::OpenOk(_))
        ));
        c
    }

    pub async fn send(&mut self, ch: u16, m: Method) {
        let mut out = BytesMut::new();
        encode_method(&mut out, ch, &m);
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = decode_frame(&mut self.buf, 0).unwrap() {
                return Some(f);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("broker answers within 5s")
                    .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    pub async fn method(&mut self) -> Method {
        loop {
            match self.frame().await.expect("a frame") {
                Frame::Method(_, m, _) => return *m,
                Frame::Heartbeat(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Expect `connection.close` with this code; returns its text.
    pub async fn expect_connection_close(&mut self, code: u16) -> String {
        match self.method().await {
            Method::Connection(connection::AMQPMethod::Close(c)) => {
                assert_eq!(c.reply_code, code, "{}", c.reply_text);
                c.reply_text.to_string()
            }
            other => panic!("expected connection.close, got {other:?}"),
        }
    }

    pub async fn open_channel(&mut self, ch: u16) {
        self.send(
            ch,
            Method::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
        assert!(matches!(
            self.method().await,
            Method::Channel(channel::AMQPMethod::OpenOk(_))
        ));
    }
}
