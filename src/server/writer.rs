//! The writer task: owns the socket's write half and coalesces encoded frames into few syscalls.
//!
//! The connection task encodes a whole loop iteration's output into one buffer and hands it over
//! here; the writer takes every buffer waiting and writes them together. `backlog` counts bytes
//! handed over but not yet written; the connection withholds consumer credit while it is high, so
//! a slow reader cannot make the broker buffer without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

/// Above this backlog the connection stops returning consumer credit.
pub const BACKLOG_HIGH: usize = 1 << 20;

/// The connection's side of the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Bytes>,
    backlog: Arc<AtomicUsize>,
    drained: Arc<Notify>,
}

impl WriterHandle {
    /// Queue bytes for writing. Returns false once the socket is gone.
    pub fn send(&self, bytes: Bytes) -> bool {
        self.backlog.fetch_add(bytes.len(), Ordering::AcqRel);
        self.tx.send(bytes).is_ok()
    }

    /// Bytes handed over but not yet written.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Acquire)
    }

    /// Resolves when the backlog falls below [`BACKLOG_HIGH`].
    pub fn drained(&self) -> Arc<Notify> {
        self.drained.clone()
    }
}

/// Start the writer; it ends when every handle is dropped (after writing what it has) or the
/// socket fails.
pub fn spawn<W>(socket: W) -> (WriterHandle, tokio::task::JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = WriterHandle {
        tx,
        backlog: Arc::new(AtomicUsize::new(0)),
        drained: Arc::new(Notify::new()),
    };
    let task = tokio::spawn(run(
        socket,
        rx,
        handle.backlog.clone(),
        handle.drained.clone(),
    ));
    (handle, task)
}

async fn run<W>(
    mut socket: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    backlog: Arc<AtomicUsize>,
    drained: Arc<Notify>,
) where
    W: AsyncWrite + Unpin,
{
    let mut batch = Vec::with_capacity(64);
    let mut joined = BytesMut::new();
    while rx.recv_many(&mut batch, 64).await > 0 {
        let total: usize = batch.iter().map(Bytes::len).sum();
        let result = if batch.len() == 1 || total > 256 * 1024 {
            let mut result = Ok(());
            for chunk in &batch {
                result = socket.write_all(chunk).await;
                if result.is_err() {
                    break;
                }
            }
            result
        } else {
            joined.clear();
            for chunk in &batch {
                joined.extend_from_slice(chunk);
            }
            socket.write_all(&joined).await
        };
        batch.clear();
        let before = backlog.fetch_sub(total, Ordering::AcqRel);
        if before >= BACKLOG_HIGH && before - total < BACKLOG_HIGH {
            drained.notify_one();
        }
        if result.is_err() {
            // The peer is gone; the reader notices on its side.
            drained.notify_one();
            return;
        }
    }
    let _ = socket.shutdown().await;
}
