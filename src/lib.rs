//! Leveret: an AMQP 0-9-1 broker with RabbitMQ's semantics.
//!
//! Layout, each layer importing only those before it:
//! - [`protocol`]: frames, command assembly, AMQP errors (the only user of amq-protocol).
//! - [`store`]: storage behind a narrow trait (in-memory now; sled for durability).
//! - [`broker`]: vhosts, exchanges, queue actors; no sockets.
//! - [`server`]: accept loop, connections, channels, writer; never touches storage.
//! - [`admin`]: the HTTP management API and Prometheus metrics, over [`broker`].
//!
//! Data flows one way: socket → codec → assembler → channel → route in vhost → queue actor →
//! delivery → writer → socket.

pub mod admin;
pub mod broker;
pub mod config;
pub mod protocol;
pub mod server;
pub mod store;
