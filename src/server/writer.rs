//! The writer: the socket's write side, coalescing encoded frames into few syscalls.
//!
//! The connection task encodes a whole loop iteration's output into one buffer. When nothing is
//! queued it writes that buffer straight to the socket (no task hop: most flushes end here); what
//! the socket does not take goes to the writer task, which waits for writability and writes every
//! queued buffer with one vectored write. `backlog` counts bytes handed over but not yet written;
//! while it is non-zero the connection never writes directly, so bytes keep their order. The
//! connection withholds consumer credit while the backlog is high, and stops reading its socket
//! past `max_pending_output`, so a slow reader cannot make the broker buffer without bound.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::socket::Socket;

use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, Notify};

/// Above this backlog the connection stops returning consumer credit.
pub const BACKLOG_HIGH: usize = 1 << 20;

/// The connection's side of the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    socket: Arc<Socket>,
    tx: mpsc::UnboundedSender<Bytes>,
    backlog: Arc<AtomicUsize>,
    drained: Arc<Notify>,
}

impl WriterHandle {
    /// Write bytes: directly if the writer is idle and the socket takes them, else queued.
    pub fn send(&self, mut bytes: Bytes) {
        if self.backlog.load(Ordering::Acquire) == 0 {
            while !bytes.is_empty() {
                match self.socket.try_write(&bytes) {
                    Ok(0) => return,
                    Ok(n) => bytes.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The peer is gone; the reader notices on its side.
                    Err(_) => return,
                }
            }
            if bytes.is_empty() {
                return;
            }
        }
        self.backlog.fetch_add(bytes.len(), Ordering::AcqRel);
        let _ = self.tx.send(bytes);
    }

    /// Whether the writer has stopped (the socket failed or closed): nothing sent arrives.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Bytes handed over but not yet written.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Acquire)
    }

    /// Notified when the backlog falls below the low-water mark given at spawn.
    pub fn drained(&self) -> Arc<Notify> {
        self.drained.clone()
    }
}

/// Start the writer task; it ends when every handle is dropped (after writing what it has) or
/// the socket fails.
/// `low_water`: the backlog below which a connection holding back credit or reading is woken;
/// it must be at most the thresholds it holds back at, so a drain always crosses it.
pub(super) fn spawn(
    socket: Arc<Socket>,
    low_water: usize,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = WriterHandle {
        socket: socket.clone(),
        tx,
        backlog: Arc::new(AtomicUsize::new(0)),
        drained: Arc::new(Notify::new()),
    };
    let task = tokio::spawn(run(
        socket,
        rx,
        handle.backlog.clone(),
        handle.drained.clone(),
        low_water,
    ));
    (handle, task)
}

/// Write as much of `queue` as the socket takes now; returns bytes written.
fn write_some(socket: &Socket, queue: &mut VecDeque<Bytes>) -> io::Result<usize> {
    let slices: Vec<IoSlice<'_>> = queue.iter().take(64).map(|b| IoSlice::new(b)).collect();
    let mut n = socket.try_write_vectored(&slices)?;
    let written = n;
    while n > 0 {
        let Some(front) = queue.front_mut() else {
            break;
        };
        if n >= front.len() {
            n -= front.len();
            queue.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
    Ok(written)
}

async fn run(
    socket: Arc<Socket>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    backlog: Arc<AtomicUsize>,
    drained: Arc<Notify>,
    low_water: usize,
) {
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let mut batch = Vec::with_capacity(64);
    loop {
        if queue.is_empty() {
            if rx.recv_many(&mut batch, 64).await == 0 {
                return;
            }
            queue.extend(batch.drain(..));
        }
        while let Ok(more) = rx.try_recv() {
            queue.push_back(more);
        }
        if socket.writable().await.is_err() {
            drained.notify_one();
            return;
        }
        match write_some(&socket, &mut queue) {
            Ok(0) => {
                drained.notify_one();
                return;
            }
            Ok(n) => {
                let before = backlog.fetch_sub(n, Ordering::AcqRel);
                if before >= low_water && before - n < low_water {
                    drained.notify_one();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                drained.notify_one();
                return;
            }
        }
    }
}
