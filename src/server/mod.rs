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

/// Bind a listener address. `[::]` stands for every interface of both families, as a
/// RabbitMQ listener given as a bare port does: `0.0.0.0` and `[::]` (IPv6 only) on the same
/// port, so `localhost` works whichever family a client resolves it to; a host without IPv6
/// gets the IPv4 listener alone. Any other address is bound as given.
pub fn bind(addr: SocketAddr) -> std::io::Result<Vec<TcpListener>> {
    use std::net::{IpAddr, Ipv4Addr};
    let listen = |addr: SocketAddr, v6_only: bool| -> std::io::Result<TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if addr.is_ipv6() {
            socket.set_only_v6(v6_only)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    };
    if addr.ip() != IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED) {
        return Ok(vec![listen(addr, false)?]);
    }
    let v4 = listen(
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()),
        false,
    )?;
    let port = v4.local_addr()?.port();
    match listen(SocketAddr::new(addr.ip(), port), true) {
        Ok(v6) => Ok(vec![v4, v6]),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
            ) || error.raw_os_error() == Some(97) =>
        {
            // EAFNOSUPPORT (97): no IPv6 on this host.
            tracing::info!(%error, port, "no IPv6: listening on IPv4 only");
            Ok(vec![v4])
        }
        Err(error) => Err(error),
    }
}

/// Bind `addr` (see [`bind`]) and serve on it; returns the bound address (IPv4 first when
/// both families are bound) and the server task.
pub async fn start(
    addr: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listeners = bind(addr)?;
    let local = listeners[0].local_addr()?;
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(serve(l, broker.clone(), shutdown.clone())))
        .collect();
    let task = tokio::spawn(async move {
        futures::future::join_all(servers).await;
    });
    Ok((local, task))
}
