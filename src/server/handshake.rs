//! Connection handshake: protocol header → start/start-ok → tune/tune-ok → open/open-ok.
//!
//! Mirrors RabbitMQ's `rabbit_reader`: a wrong protocol header is answered with ours and the
//! socket closed; bad credentials are 403 ACCESS_REFUSED (sent as `connection.close` only to
//! clients that advertise `authentication_failure_close`, otherwise the socket just closes); an
//! unknown vhost is 530 NOT_ALLOWED.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;

use super::connection::FrameReader;
use super::writer::WriterHandle;
use crate::broker::{Broker, VHost};
use crate::protocol::codec::{encode_method, erlang_binary, frame_payload, PROTOCOL_HEADER};
use crate::protocol::table::{parse_amqplain, parse_plain};
use crate::protocol::{connection, AMQPValue, AmqpError, FieldTable, Frame, LongString, Method};

/// Client capabilities that change what the broker sends.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ClientCapabilities {
    pub(super) consumer_cancel_notify: bool,
    pub(super) connection_blocked: bool,
    pub(super) authentication_failure_close: bool,
}

/// What a completed handshake settles.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) vhost: Arc<VHost>,
    pub(super) user: String,
    pub(super) frame_max: u32,
    pub(super) channel_max: u16,
    pub(super) heartbeat: u16,
    pub(super) capabilities: ClientCapabilities,
    pub(super) mechanism: String,
    pub(super) client_properties: FieldTable,
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub(super) enum HandshakeFailure {
    /// The socket closed, timed out, or the header was wrong (already answered).
    Closed,
    /// Send `connection.close` with this error, then close.
    Refused(AmqpError),
    /// Close the socket without a word, after RabbitMQ's silent-close delay: any other failure
    /// before the connection is open (an unknown mechanism, a malformed response, a failed
    /// tune negotiation, an unexpected method or frame). RabbitMQ makes such a client wait
    /// so it cannot hammer the broker with retries.
    Delayed,
}

fn server_properties(cluster_name: &str) -> FieldTable {
    let mut capabilities = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let text = |s: &str| AMQPValue::LongString(s.into());
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    props.insert("cluster_name".into(), text(cluster_name));
    props.insert(
        "copyright".into(),
        text("Copyright (c) the Leveret authors"),
    );
    props.insert(
        "information".into(),
        text("Licensed under MIT OR Apache-2.0"),
    );
    // Clients gate RabbitMQ's extensions on `product` (amqp091-go's suite runs its
    // RabbitMQ-only tests only when it reads "RabbitMQ"), so Leveret answers as the RabbitMQ
    // release it reproduces and names itself in `platform`, as RabbitMQ names Erlang/OTP there.
    props.insert(
        "platform".into(),
        text(concat!("Leveret ", env!("CARGO_PKG_VERSION"), " (Rust)")),
    );
    props.insert("product".into(), text("RabbitMQ"));
    props.insert("version".into(), text(crate::broker::COMPATIBLE_VERSION));
    props
}

fn capabilities_of(client_properties: &FieldTable) -> ClientCapabilities {
    let table = match client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => Some(t),
        _ => None,
    };
    let flag = |name: &str| {
        matches!(
            table.and_then(|t| t.inner().get(name)),
            Some(AMQPValue::Boolean(true))
        )
    };
    ClientCapabilities {
        consumer_cancel_notify: flag("consumer_cancel_notify"),
        connection_blocked: flag("connection.blocked"),
        authentication_failure_close: flag("authentication_failure_close"),
    }
}

fn send_method(writer: &WriterHandle, method: Method) {
    let mut out = BytesMut::with_capacity(256);
    encode_method(&mut out, 0, &method);
    writer.send(out.freeze());
}

async fn expect_method(reader: &mut FrameReader) -> Result<Method, HandshakeFailure> {
    loop {
        match reader.next_frame().await {
            Ok(Some(Frame::Method(0, method, _))) => return Ok(*method),
            Ok(Some(Frame::Heartbeat(_))) => continue,
            Ok(Some(frame)) => {
                let (frame_type, payload) = frame_payload(&frame);
                tracing::debug!(
                    frame_type,
                    payload = %erlang_binary(&payload),
                    "unexpected frame during the handshake"
                );
                return Err(HandshakeFailure::Delayed);
            }
            Ok(None) => return Err(HandshakeFailure::Closed),
            Err(error) => {
                tracing::debug!(%error, "undecodable frame during the handshake");
                return Err(HandshakeFailure::Delayed);
            }
        }
    }
}

/// The largest frame accepted before the handshake settles frame_max: a peer that has not
/// logged in cannot make the broker buffer more than this, whatever the configuration says.
pub(super) const PRE_AUTH_FRAME_MAX: u32 = 131_072;

/// The frame size the reader enforces once `frame_max` is negotiated. "No limit" (0) still
/// has one: no frame needs to be larger than the largest message plus its frame overhead.
pub(super) fn inbound_frame_limit(frame_max: u32, max_message_size: u64) -> u32 {
    match frame_max {
        0 => u32::try_from(max_message_size.saturating_add(8))
            .unwrap_or(u32::MAX)
            .max(PRE_AUTH_FRAME_MAX),
        n => n,
    }
}

/// The frame size the broker splits bodies at: with no negotiated limit, RabbitMQ's default.
pub(super) fn outbound_frame_size(frame_max: u32) -> u32 {
    match frame_max {
        0 => PRE_AUTH_FRAME_MAX,
        n => n,
    }
}

/// Run the handshake on a fresh socket.
pub(super) async fn handshake(
    reader: &mut FrameReader,
    writer: &WriterHandle,
    broker: &Broker,
    peer: SocketAddr,
    tls: Option<&super::tls::TlsIdentity>,
) -> Result<Session, HandshakeFailure> {
    // EXTERNAL is offered to TLS clients that presented a certificate: its CN is the user.
    let peer_cn = tls.and_then(|t| t.peer_cn.as_deref());
    let header = reader
        .read_exact_bytes(8)
        .await
        .ok_or(HandshakeFailure::Closed)?;
    // AMQP 0-9 ("AMQP 1 1 0 9") is spoken as 0-9-1, as RabbitMQ does; 0-8 is not spoken.
    if &header[..] != PROTOCOL_HEADER && &header[..] != b"AMQP\x01\x01\x00\x09" {
        writer.send(bytes::Bytes::from_static(PROTOCOL_HEADER));
        return Err(HandshakeFailure::Closed);
    }
    send_method(
        writer,
        Method::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(&broker.parameters().cluster_name()),
            // RabbitMQ's order (clients that take the first mechanism they know see the same).
            mechanisms: if peer_cn.is_some() {
                "AMQPLAIN PLAIN EXTERNAL".into()
            } else {
                "AMQPLAIN PLAIN".into()
            },
            locales: "en_US".into(),
        })),
    );
    let Method::Connection(connection::AMQPMethod::StartOk(start_ok)) =
        expect_method(reader).await?
    else {
        return Err(HandshakeFailure::Delayed);
    };
    let capabilities = capabilities_of(&start_ok.client_properties);
    let mechanism = start_ok.mechanism.as_str();
    let response: &LongString = &start_ok.response;
    let from_loopback = peer.ip().is_loopback();
    let credentials = match (mechanism, peer_cn) {
        ("PLAIN", _) => parse_plain(response.as_bytes()),
        ("AMQPLAIN", _) => parse_amqplain(response.as_bytes()),
        ("EXTERNAL", Some(_)) => Some((String::new(), String::new())),
        (other, _) => {
            tracing::warn!(%peer, mechanism = other, "unknown authentication mechanism");
            return Err(HandshakeFailure::Delayed);
        }
    };
    let Some((login, password)) = credentials else {
        tracing::warn!(%peer, mechanism, "malformed authentication response");
        return Err(HandshakeFailure::Delayed);
    };
    let authenticated = match peer_cn.filter(|_| mechanism == "EXTERNAL") {
        Some(cn) => broker.authenticate_external(cn, from_loopback),
        None => broker.authenticate(&login, &password, from_loopback),
    };
    let Some(user) = authenticated.map(|u| u.name) else {
        tracing::warn!(%peer, mechanism, "login refused");
        if !capabilities.authentication_failure_close {
            // RabbitMQ closes such a connection when its 3 s handshake timer fires.
            return Err(HandshakeFailure::Delayed);
        }
        return Err(HandshakeFailure::Refused(
            AmqpError::access_refused(format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            ))
            .into_hard(),
        ));
    };
    let config = broker.config();
    send_method(
        writer,
        Method::Connection(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: config.channel_max,
            frame_max: config.frame_max,
            heartbeat: config.heartbeat,
        })),
    );
    let Method::Connection(connection::AMQPMethod::TuneOk(tune_ok)) = expect_method(reader).await?
    else {
        return Err(HandshakeFailure::Delayed);
    };
    // RabbitMQ's negotiation: a client value is at least the minimum unless 0, and when the
    // server has a limit the client must name one within it (0, "no limit", is refused then).
    let (frame_max, channel_max) = (tune_ok.frame_max, tune_ok.channel_max);
    let refused = |value: u32, min: u32, server: u32| {
        (value != 0 && value < min) || (server != 0 && (value == 0 || value > server))
    };
    if refused(frame_max, 4096, config.frame_max)
        || refused(u32::from(channel_max), 1, u32::from(config.channel_max))
    {
        tracing::warn!(
            %peer,
            frame_max,
            channel_max,
            "failed to negotiate connection parameters: frame_max within 4096..={}, channel_max within 1..={} (0 only when the server's is 0)",
            config.frame_max,
            config.channel_max
        );
        return Err(HandshakeFailure::Delayed);
    }
    reader.set_frame_max(inbound_frame_limit(frame_max, config.max_message_size));
    let Method::Connection(connection::AMQPMethod::Open(open)) = expect_method(reader).await?
    else {
        return Err(HandshakeFailure::Delayed);
    };
    let vhost_name = open.virtual_host.as_str();
    let Some(vhost) = broker.vhost(vhost_name) else {
        return Err(HandshakeFailure::Refused(
            AmqpError::not_allowed(format!("vhost {vhost_name} not found")).with_method(10, 40),
        ));
    };
    if !broker.access().may_open_vhost(&user, vhost_name) {
        return Err(HandshakeFailure::Refused(
            AmqpError::not_allowed(format!(
                "access to vhost '{vhost_name}' refused for user '{user}'"
            ))
            .with_method(10, 40),
        ));
    }
    if let Some(limit) = vhost.meta().limit("max-connections") {
        let open = broker
            .connections()
            .all()
            .iter()
            .filter(|c| c.vhost == vhost_name)
            .count() as u64;
        if open >= limit {
            return Err(HandshakeFailure::Refused(
                AmqpError::not_allowed(format!(
                    "access to vhost '{vhost_name}' refused for user '{user}': connection limit ({limit}) is reached"
                ))
                .with_method(10, 40),
            ));
        }
    }
    if let Some(limit) = broker
        .access()
        .user(&user)
        .and_then(|u| u.limit("max-connections"))
    {
        let open = broker
            .connections()
            .all()
            .iter()
            .filter(|c| c.user == user)
            .count() as u64;
        if open >= limit {
            return Err(HandshakeFailure::Refused(
                AmqpError::not_allowed(format!(
                    "connection refused for user '{user}': user connection limit ({limit}) is reached"
                ))
                .with_method(10, 40),
            ));
        }
    }
    send_method(
        writer,
        Method::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
    );
    Ok(Session {
        vhost,
        user,
        frame_max,
        // No limit: as many channels as the protocol numbers.
        channel_max: if channel_max == 0 {
            u16::MAX
        } else {
            channel_max
        },
        heartbeat: tune_ok.heartbeat,
        capabilities,
        mechanism: mechanism.to_owned(),
        client_properties: start_ok.client_properties,
    })
}
