//! Command assembler: method + content header + body frames → one [`Command`].
//!
//! A pure per-channel state machine (RabbitMQ's `rabbit_command_assembler`). Only `basic.publish`
//! carries content from a client. A single body frame is kept as the `Bytes` it arrived in; several
//! are joined once. Out-of-sequence frames are 505 UNEXPECTED_FRAME, a connection error.

use amq_protocol::protocol::{basic, AMQPClass};
use bytes::{Bytes, BytesMut};

use super::codec::{ArgumentOrder, ContentHeader, Frame};
use super::error::AmqpError;

/// The content of a published message.
#[derive(Debug, Clone)]
pub struct Content {
    /// Parsed properties.
    pub properties: basic::AMQPProperties,
    /// Properties as they arrived on the wire.
    pub raw_properties: Bytes,
    /// The body.
    pub body: Bytes,
}

/// A complete command for a channel.
#[derive(Debug, Clone)]
pub struct Command {
    /// The method.
    pub method: Box<AMQPClass>,
    /// Content, for methods that carry it.
    pub content: Option<Content>,
    /// The argument table's key order, where it matters ([`ArgumentOrder`]).
    pub argument_order: ArgumentOrder,
}

/// A publish whose body is still arriving.
#[derive(Debug)]
struct PartialContent {
    method: Box<AMQPClass>,
    header: Box<ContentHeader>,
    first: Option<Bytes>,
    joined: BytesMut,
    received: u64,
}

/// What the assembler expects next.
#[derive(Debug, Default)]
enum State {
    #[default]
    Method,
    Header(Box<AMQPClass>),
    Body(Box<PartialContent>),
}

/// Per-channel assembler.
#[derive(Debug, Default)]
pub struct CommandAssembler {
    state: State,
    max_body: u64,
}

fn carries_content(method: &AMQPClass) -> bool {
    matches!(method, AMQPClass::Basic(basic::AMQPMethod::Publish(_)))
}

impl CommandAssembler {
    /// An assembler refusing bodies over `max_body` bytes (0 = no limit).
    pub fn new(max_body: u64) -> Self {
        Self {
            state: State::Method,
            max_body,
        }
    }

    /// Whether a partial command is in progress.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Method)
    }

    /// Feed one frame; returns a command once complete.
    pub fn feed(&mut self, frame: Frame) -> Result<Option<Command>, AmqpError> {
        match (std::mem::take(&mut self.state), frame) {
            (State::Method, Frame::Method(_, method, argument_order)) => {
                if carries_content(&method) {
                    self.state = State::Header(method);
                    Ok(None)
                } else {
                    Ok(Some(Command {
                        method,
                        content: None,
                        argument_order,
                    }))
                }
            }
            (State::Method, Frame::Header(..) | Frame::Body(..)) => Err(
                AmqpError::unexpected_frame("expected method frame, got non method frame instead"),
            ),
            (State::Header(method), Frame::Header(_, header)) => {
                if header.class_id != 60 {
                    return Err(AmqpError::unexpected_frame(format!(
                        "expected content header for class 60, got one for class {} instead",
                        header.class_id
                    ))
                    .with_method(60, 40));
                }
                if self.max_body != 0 && header.body_size > self.max_body {
                    return Err(AmqpError::precondition_failed(format!(
                        "message size {} is larger than configured max size {}",
                        header.body_size, self.max_body
                    ))
                    .with_method(60, 40));
                }
                if header.body_size == 0 {
                    return Ok(Some(Command {
                        method,
                        content: Some(Content {
                            properties: header.properties,
                            raw_properties: header.raw_properties,
                            body: Bytes::new(),
                        }),
                        argument_order: None,
                    }));
                }
                self.state = State::Body(Box::new(PartialContent {
                    method,
                    header,
                    first: None,
                    joined: BytesMut::new(),
                    received: 0,
                }));
                Ok(None)
            }
            (State::Header(_), Frame::Method(..) | Frame::Body(..)) => {
                Err(AmqpError::unexpected_frame(
                    "expected content header for class 60, got non content header frame instead",
                )
                .with_method(60, 40))
            }
            (State::Body(mut partial), Frame::Body(_, payload)) => {
                let PartialContent {
                    header,
                    first,
                    joined,
                    received,
                    ..
                } = &mut *partial;
                *received += payload.len() as u64;
                let received = *received;
                if received > header.body_size {
                    return Err(AmqpError::frame_error(format!(
                        "content body exceeds announced size {}",
                        header.body_size
                    )));
                }
                match first.take() {
                    None if joined.is_empty() => *first = Some(payload),
                    None => joined.extend_from_slice(&payload),
                    Some(earlier) => {
                        joined.reserve(header.body_size as usize);
                        joined.extend_from_slice(&earlier);
                        joined.extend_from_slice(&payload);
                    }
                }
                if received == header.body_size {
                    let PartialContent {
                        method,
                        header,
                        first,
                        joined,
                        ..
                    } = *partial;
                    let body = match first {
                        Some(only) => only,
                        None => joined.freeze(),
                    };
                    return Ok(Some(Command {
                        method,
                        content: Some(Content {
                            properties: header.properties,
                            raw_properties: header.raw_properties,
                            body,
                        }),
                        argument_order: None,
                    }));
                }
                self.state = State::Body(partial);
                Ok(None)
            }
            (State::Body(_), Frame::Method(..) | Frame::Header(..)) => {
                Err(AmqpError::unexpected_frame(
                    "expected content body, got non content body frame instead",
                )
                .with_method(60, 40))
            }
            (state, Frame::Heartbeat(_)) => {
                self.state = state;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;

    fn publish() -> Frame {
        Frame::Method(
            1,
            Box::new(AMQPClass::Basic(basic::AMQPMethod::Publish(
                basic::Publish {
                    exchange: "".into(),
                    routing_key: "q".into(),
                    mandatory: false,
                    immediate: false,
                },
            ))),
            None,
        )
    }

    fn header(size: u64) -> Frame {
        Frame::Header(
            1,
            Box::new(ContentHeader {
                class_id: 60,
                body_size: size,
                properties: AMQPProperties::default(),
                raw_properties: Bytes::from_static(&[0, 0]),
            }),
        )
    }

    #[test]
    fn joins_body_frames() {
        let mut a = CommandAssembler::new(0);
        assert!(a.feed(publish()).unwrap().is_none());
        assert!(a.feed(header(6)).unwrap().is_none());
        assert!(a
            .feed(Frame::Body(1, Bytes::from_static(b"abc")))
            .unwrap()
            .is_none());
        let cmd = a
            .feed(Frame::Body(1, Bytes::from_static(b"def")))
            .unwrap()
            .unwrap();
        assert_eq!(&cmd.content.unwrap().body[..], b"abcdef");
        assert!(a.is_idle());
    }

    #[test]
    fn empty_body_completes_on_header() {
        let mut a = CommandAssembler::new(0);
        a.feed(publish()).unwrap();
        assert!(a.feed(header(0)).unwrap().is_some());
    }

    #[test]
    fn header_without_method_is_unexpected() {
        let mut a = CommandAssembler::new(0);
        assert_eq!(a.feed(header(1)).unwrap_err().code as u16, 505);
    }

    #[test]
    fn method_inside_content_is_unexpected() {
        let mut a = CommandAssembler::new(0);
        a.feed(publish()).unwrap();
        assert_eq!(a.feed(publish()).unwrap_err().code as u16, 505);
    }

    #[test]
    fn oversized_message_is_precondition_failed() {
        let mut a = CommandAssembler::new(5);
        a.feed(publish()).unwrap();
        let err = a.feed(header(6)).unwrap_err();
        assert_eq!(err.code as u16, 406);
        assert!(!err.closes_connection());
    }
}
