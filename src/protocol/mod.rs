//! Wire layer: the only module that names amq-protocol.
//!
//! Frames in ([`codec::decode_frame`]), commands assembled per channel ([`assembler`]), frames out
//! (`codec::encode_*`), and [`AmqpError`], the exception every layer above returns. Types the rest
//! of the broker needs (methods, properties, field tables) are re-exported from here.

pub mod assembler;
pub mod codec;
pub mod error;
pub mod headers;
pub mod nesting;
pub mod table;

pub use amq_protocol::protocol::basic::AMQPProperties as Properties;
pub use amq_protocol::protocol::{
    access, basic, channel, confirm, connection, exchange, queue, tx, AMQPClass as Method,
};
pub use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
pub use assembler::{Command, CommandAssembler, Content};
pub use codec::{ContentHeader, Frame};
pub use error::{short_string, AmqpError, ReplyCode};
