//! The byte stream under a connection: a TCP socket, or (for TLS) one end of a Unix socket
//! pair whose other end a TLS task pumps. Both have tokio's readiness API, which the reader and
//! the writer use to read and write without a task hop.

use std::io::{self, IoSlice};

use bytes::BufMut;
use tokio::net::{TcpStream, UnixStream};

/// A connection's stream.
#[derive(Debug)]
pub(super) enum Socket {
    /// Plain AMQP.
    Tcp(TcpStream),
    /// The clear side of a TLS connection.
    Unix(UnixStream),
}

impl Socket {
    pub(super) async fn readable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.readable().await,
            Self::Unix(s) => s.readable().await,
        }
    }

    pub(super) fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_read_buf(buf),
            Self::Unix(s) => s.try_read_buf(buf),
        }
    }

    pub(super) async fn writable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.writable().await,
            Self::Unix(s) => s.writable().await,
        }
    }

    pub(super) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write(buf),
            Self::Unix(s) => s.try_write(buf),
        }
    }

    pub(super) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write_vectored(bufs),
            Self::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    /// Close our sending side (FIN), so the peer reads what was sent before the close.
    pub(super) async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = match self {
            Self::Tcp(s) => s.shutdown().await,
            Self::Unix(s) => s.shutdown().await,
        };
    }
}
