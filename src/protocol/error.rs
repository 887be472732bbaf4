//! The one error type that crosses layers: an AMQP exception.
//!
//! Every failure a client can provoke becomes an [`AmqpError`] carrying RabbitMQ's reply code, its
//! reply text (prefixed with the code's name, as RabbitMQ writes it), the class/method that caused
//! it, and whether it closes the channel (soft) or the whole connection (hard).

use std::fmt;

/// Reply codes of AMQP 0-9-1 as RabbitMQ uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    /// 311: content too large (channel).
    ContentTooLarge = 311,
    /// 312: mandatory message could not be routed (basic.return only).
    NoRoute = 312,
    /// 313: immediate message had no consumer (basic.return only).
    NoConsumers = 313,
    /// 320: the operator closed the connection.
    ConnectionForced = 320,
    /// 402: invalid path (vhost).
    InvalidPath = 402,
    /// 403: access refused (channel, or connection during login).
    AccessRefused = 403,
    /// 404: entity not found (channel).
    NotFound = 404,
    /// 405: exclusive resource held by another connection (channel).
    ResourceLocked = 405,
    /// 406: precondition failed (channel).
    PreconditionFailed = 406,
    /// 501: malformed frame (connection).
    FrameError = 501,
    /// 502: malformed method arguments (connection).
    SyntaxError = 502,
    /// 503: method not valid in this state (connection).
    CommandInvalid = 503,
    /// 504: invalid channel usage (connection).
    ChannelError = 504,
    /// 505: frame arrived out of sequence (connection).
    UnexpectedFrame = 505,
    /// 506: server resource exhausted (connection).
    ResourceError = 506,
    /// 530: not allowed (connection).
    NotAllowed = 530,
    /// 540: not implemented (connection).
    NotImplemented = 540,
    /// 541: internal error (connection).
    InternalError = 541,
}

impl ReplyCode {
    /// The code's name, as RabbitMQ prefixes reply texts with it.
    pub fn name(self) -> &'static str {
        match self {
            Self::ContentTooLarge => "CONTENT_TOO_LARGE",
            Self::NoRoute => "NO_ROUTE",
            Self::NoConsumers => "NO_CONSUMERS",
            Self::ConnectionForced => "CONNECTION_FORCED",
            Self::InvalidPath => "INVALID_PATH",
            Self::AccessRefused => "ACCESS_REFUSED",
            Self::NotFound => "NOT_FOUND",
            Self::ResourceLocked => "RESOURCE_LOCKED",
            Self::PreconditionFailed => "PRECONDITION_FAILED",
            Self::FrameError => "FRAME_ERROR",
            Self::SyntaxError => "SYNTAX_ERROR",
            Self::CommandInvalid => "COMMAND_INVALID",
            Self::ChannelError => "CHANNEL_ERROR",
            Self::UnexpectedFrame => "UNEXPECTED_FRAME",
            Self::ResourceError => "RESOURCE_ERROR",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Whether RabbitMQ treats this code as a connection (hard) error.
    pub fn is_hard(self) -> bool {
        matches!(
            self,
            Self::ConnectionForced
                | Self::InvalidPath
                | Self::FrameError
                | Self::SyntaxError
                | Self::CommandInvalid
                | Self::ChannelError
                | Self::UnexpectedFrame
                | Self::ResourceError
                | Self::NotAllowed
                | Self::NotImplemented
                | Self::InternalError
        )
    }
}

/// An AMQP exception: what goes into `channel.close` or `connection.close`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AmqpError {
    /// The reply code.
    pub code: ReplyCode,
    /// Full reply text, already prefixed with the code name.
    pub text: String,
    /// Class of the method that failed (0 when none).
    pub class_id: u16,
    /// Method that failed (0 when none).
    pub method_id: u16,
    /// Force a connection close even for a soft code (e.g. 403 during login).
    pub hard: bool,
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code as u16, self.text)
    }
}

impl AmqpError {
    /// An error with `code` and a detail text; the code name is prefixed as RabbitMQ does.
    pub fn new(code: ReplyCode, detail: impl fmt::Display) -> Self {
        Self {
            code,
            text: format!("{} - {}", code.name(), detail),
            class_id: 0,
            method_id: 0,
            hard: code.is_hard(),
        }
    }

    /// The reply text as it goes on the wire: a short string, so cut to 255 bytes (at a
    /// character boundary) as RabbitMQ cuts it. Texts name queues and exchanges, whose names
    /// alone may be 255 bytes long.
    pub fn reply_text(&self) -> amq_protocol::types::ShortString {
        // RabbitMQ keeps the first 252 bytes and marks the cut with "...".
        if self.text.len() <= 255 {
            return short_string(&self.text);
        }
        let mut end = 252;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        amq_protocol::types::ShortString::from(format!("{}...", &self.text[..end]))
    }

    /// The same error, attributed to the method that caused it.
    pub fn with_method(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// Whether this error closes the connection rather than the channel.
    pub fn closes_connection(&self) -> bool {
        self.hard
    }

    /// Escalate to a connection error (keeps the code).
    pub fn into_hard(mut self) -> Self {
        self.hard = true;
        self
    }

    /// 404.
    pub fn not_found(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotFound, detail)
    }
    /// 406.
    pub fn precondition_failed(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::PreconditionFailed, detail)
    }
    /// 403.
    pub fn access_refused(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::AccessRefused, detail)
    }
    /// 405.
    pub fn resource_locked(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::ResourceLocked, detail)
    }
    /// 501.
    pub fn frame_error(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::FrameError, detail)
    }
    /// 502.
    pub fn syntax_error(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::SyntaxError, detail)
    }
    /// 503.
    pub fn command_invalid(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::CommandInvalid, detail)
    }
    /// 504.
    pub fn channel_error(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::ChannelError, detail)
    }
    /// 505.
    pub fn unexpected_frame(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::UnexpectedFrame, detail)
    }
    /// 530.
    pub fn not_allowed(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotAllowed, detail)
    }
    /// 540.
    pub fn not_implemented(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotImplemented, detail)
    }
    /// 541.
    pub fn internal_error(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::InternalError, detail)
    }
}

/// A short string from any text: cut to 255 bytes at a character boundary. amq-protocol's own
/// conversion panics on a longer string, so text that may be long (built from names, texts or
/// HTTP input) goes through here.
pub fn short_string(text: &str) -> amq_protocol::types::ShortString {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    amq_protocol::types::ShortString::from(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reply_texts_are_cut_to_a_short_string() {
        let name = "q".repeat(255);
        let error = AmqpError::not_found(format!("no queue '{name}' in vhost '/'"));
        assert!(error.text.len() > 255);
        assert_eq!(error.reply_text().as_str().len(), 255);
        assert!(error.reply_text().as_str().ends_with("qqq..."));
        // A multi-byte character straddling byte 255 is dropped whole.
        let text = format!("{}é", "a".repeat(254));
        assert_eq!(short_string(&text).as_str(), "a".repeat(254));
    }
}
