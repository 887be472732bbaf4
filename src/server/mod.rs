//! Sockets and sessions: the accept loop, connections (handshake, channels, writer).
//!
//! One task per connection runs the handshake and then every channel as a plain state machine;
//! a second task writes. Shutdown is a watch flag: connections close with 320 CONNECTION_FORCED
//! and the accept loop waits for them to finish.

mod basic;
mod channel;
mod confirm;
mod connection;
mod handshake;
mod socket;
pub mod tls;
mod writer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Accept AMQP connections until `shutdown` turns true, then close them all and return.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(peer);
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        let socket = socket::Socket::Tcp(stream);
                        connection::run(socket, (peer, local), None, broker, shutdown, id).await;
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Serve one already-connected stream (one end of a Unix socket pair) as if it had been
/// accepted from `peer`, to the end of the connection: the fuzz target drives whole
/// connections this way, with no listener. The TLS listener hands its clear side to the same
/// connection code.
pub async fn serve_stream(
    stream: tokio::net::UnixStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    connection::run(
        socket::Socket::Unix(stream),
        (peer, peer),
        None,
        broker,
        shutdown,
        id,
    )
    .await;
}

/// Bind `addr` and serve on it; returns the bound address and the server task.
pub async fn start(
    addr: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, broker, shutdown));
    Ok((local, task))
}
