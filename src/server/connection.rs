//! One AMQP connection: reads frames, runs its channels, receives deliveries, flushes output.
//!
//! A single task owns everything here (channels are plain structs). Each loop iteration handles
//! a batch of socket frames or queue events, then flushes once: batched acks and consumer credit
//! to queues, confirms and frames to the writer. Publishing awaits a full queue lane, which stops
//! this task reading its socket: TCP backpressure. Nothing awaits this task, so that wait cannot
//! deadlock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use super::channel::Channel;
use super::handshake::{handshake, ClientCapabilities, HandshakeFailure};
use super::socket::Socket;
use super::writer::{self, WriterHandle, BACKLOG_HIGH};
use crate::broker::access::{Permission, Resource};
use crate::broker::alarms::AlarmState;
use crate::broker::connections::{ChannelInfo, ConnectionInfo, MessageCounters};
use crate::broker::queue::{ClientEvent, ClientSink, QueueHandle};
use crate::broker::{Broker, VHost};
use crate::protocol::codec::{
    decode_frame, encode_heartbeat, encode_method, erlang_binary, frame_payload,
};
use crate::protocol::CommandAssembler;
use crate::protocol::{channel, connection, AmqpError, Frame, Method, ReplyCode};

/// How long a peer has to answer our `connection.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client has to close its socket after our `close-ok`.
const CLIENT_EOF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Output is handed to the writer at least this often within one batch of input.
const OUT_CHUNK: usize = 64 * 1024;
/// The pending-output bound while the memory alarm is on.
const ALARM_PENDING_OUTPUT: usize = 64 * 1024;
/// How often channels look for deliveries past their consumer timeout.
const CONSUMER_TIMEOUT_CHECK: Duration = Duration::from_secs(1);

/// Reads and decodes frames from the socket (shared with the writer, which only writes).
pub(super) struct FrameReader {
    socket: Arc<Socket>,
    buf: BytesMut,
    frame_max: u32,
}

impl FrameReader {
    fn new(socket: Arc<Socket>, frame_max: u32) -> Self {
        Self {
            socket,
            // Grown on demand (see `fill`): an idle connection holds little.
            buf: BytesMut::with_capacity(4096),
            frame_max,
        }
    }

    pub(super) fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// Read more bytes; 0 means end of stream. Cancel-safe.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        loop {
            self.socket.readable().await?;
            match self.socket.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    fn decode(&mut self) -> Result<Option<Frame>, AmqpError> {
        decode_frame(&mut self.buf, self.frame_max)
    }

    /// The next frame, or `Ok(None)` at end of stream.
    pub(super) async fn next_frame(&mut self) -> Result<Option<Frame>, AmqpError> {
        loop {
            if let Some(frame) = self.decode()? {
                return Ok(Some(frame));
            }
            match self.fill().await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// Exactly `n` raw bytes (the protocol header), or `None` if the peer closed first.
    pub(super) async fn read_exact_bytes(&mut self, n: usize) -> Option<Bytes> {
        while self.buf.len() < n {
            match self.fill().await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        Some(self.buf.split_to(n).freeze())
    }
}

/// Work a handler leaves for after the inbox has been drained (ordering with deliveries).
#[derive(Debug)]
pub(super) enum Deferred {
    /// `basic.cancel-ok`, after every delivery the queue sent before the cancel.
    CancelOk {
        channel: u16,
        consumer_tag: Arc<str>,
        nowait: bool,
    },
}

/// Connection-wide state the channels use.
pub(super) struct ConnCtx {
    pub(super) id: u64,
    pub(super) broker: Arc<Broker>,
    pub(super) vhost: Arc<VHost>,
    pub(super) user: String,
    /// What management sees of this connection.
    pub(super) info: Arc<ConnectionInfo>,
    pub(super) frame_max: u32,
    pub(super) capabilities: ClientCapabilities,
    pub(super) out: BytesMut,
    pub(super) sink: ClientSink,
    pub(super) writer: WriterHandle,
    pending_acks: HashMap<u64, (QueueHandle, Vec<u64>)>,
    pending_credit: HashMap<u64, (QueueHandle, u32)>,
    pub(super) deferred: Vec<Deferred>,
}

impl ConnCtx {
    /// A context for driving channels in unit tests: output accumulates in `out`, unflushed.
    #[cfg(test)]
    pub(super) fn for_tests(broker: Arc<Broker>, sink: ClientSink, writer: WriterHandle) -> Self {
        let vhost = broker.vhost("/").expect("default vhost");
        let addr: SocketAddr = "127.0.0.1:5672".parse().expect("address");
        let (info, _) = ConnectionInfo::new(
            1,
            addr,
            addr,
            "guest".to_owned(),
            "/".to_owned(),
            "PLAIN".to_owned(),
            Default::default(),
            (131_072, 2047, 60),
        );
        Self {
            id: 1,
            broker,
            vhost,
            user: "guest".to_owned(),
            info,
            frame_max: 131_072,
            capabilities: ClientCapabilities {
                consumer_cancel_notify: true,
                connection_blocked: true,
                authentication_failure_close: true,
            },
            out: BytesMut::new(),
            sink,
            writer,
            pending_acks: HashMap::new(),
            pending_credit: HashMap::new(),
            deferred: Vec::new(),
        }
    }

    /// Queue an ack for a batch send at the end of this iteration.
    pub(super) fn ack_later(&mut self, queue: &QueueHandle, seq: u64) {
        self.pending_acks
            .entry(queue.id())
            .or_insert_with(|| (queue.clone(), Vec::new()))
            .1
            .push(seq);
    }

    /// Send batched acks now; call before any other command to a queue so order holds.
    pub(super) fn flush_acks(&mut self) {
        for (_, (queue, seqs)) in self.pending_acks.drain() {
            queue.ack(seqs);
        }
    }

    /// Owe a consumer one unit of in-flight credit.
    pub(super) fn credit_later(&mut self, queue: &QueueHandle, consumer_id: u64) {
        self.pending_credit
            .entry(consumer_id)
            .or_insert_with(|| (queue.clone(), 0))
            .1 += 1;
    }

    fn flush_credit(&mut self) {
        if self.writer.backlog() >= BACKLOG_HIGH {
            return;
        }
        for (consumer_id, (queue, n)) in self.pending_credit.drain() {
            queue.credit(consumer_id, n);
        }
    }

    /// Encode a method on a channel.
    pub(super) fn send_method(&mut self, channel: u16, method: &Method) {
        encode_method(&mut self.out, channel, method);
    }

    fn flush_out(&mut self) {
        if !self.out.is_empty() {
            let bytes = self.out.split().freeze();
            self.info
                .send_oct
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.writer.send(bytes);
        }
    }

    /// Add `n` to one of a channel's message counters, its vhost's and the broker's.
    pub(super) fn count(
        &self,
        channel: &ChannelInfo,
        counter: fn(&MessageCounters) -> &std::sync::atomic::AtomicU64,
        n: u64,
    ) {
        MessageCounters::add(counter(&channel.counters), n);
        MessageCounters::add(counter(self.vhost.counters()), n);
        MessageCounters::add(counter(self.broker.counters()), n);
    }

    /// Whether the user has the `impersonator` tag (may publish with any `user_id`).
    pub(super) fn may_impersonate(&self) -> bool {
        self.broker
            .access()
            .user(&self.user)
            .is_some_and(|u| u.has_tag(crate::broker::access::IMPERSONATOR))
    }

    /// Check a permission of this connection's user, with RabbitMQ's 403 text.
    pub(super) fn authorize(
        &self,
        resource: Resource<'_>,
        permission: Permission,
    ) -> Result<(), AmqpError> {
        self.broker
            .access()
            .check(&self.user, self.vhost.name(), resource, permission)
    }
}

enum Outcome {
    /// The peer closed the socket (or it failed).
    Eof,
    /// The client sent `connection.close`; close-ok has been queued.
    ClientClosed,
    /// We close with this error.
    Close(AmqpError),
}

struct Connection {
    ctx: ConnCtx,
    channels: HashMap<u16, Channel>,
    /// Frames on channels that are not open, assembled as RabbitMQ does (it runs the command
    /// assembler before the channel sees a command): a content-bearing method there fails
    /// only once its content is complete, or when a frame breaks the content's sequence.
    unopened: HashMap<u16, CommandAssembler>,
    channel_max: u16,
    heartbeat: u16,
    /// Resource alarms, watched.
    alarms: watch::Receiver<AlarmState>,
    /// This connection has published: an alarm blocks it (RabbitMQ leaves consumers alone).
    publishes: bool,
    /// Blocked by an alarm: its socket is not read until the alarm clears.
    blocked: bool,
    /// The read buffer may hold frames not yet handled (held back by a full output).
    undecoded: bool,
    /// Its exclusive queues are deleted (the orderly close awaited it).
    exclusive_deleted: bool,
    /// The memory alarm is on (output is bounded tighter).
    memory_alarm: bool,
}

/// However the connection task ends, a panic included, what it registered goes: the
/// connection leaves the registry (management, metrics), its consumers leave their queues,
/// its unacknowledged deliveries are requeued, and its exclusive queues are deleted.
impl Drop for Connection {
    fn drop(&mut self) {
        self.ctx.broker.connections().unregister(self.ctx.id);
        self.ctx.flush_acks();
        for (_, mut ch) in self.channels.drain() {
            ch.release_all(&mut self.ctx);
        }
        if !self.exclusive_deleted {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (vhost, id) = (self.ctx.vhost.clone(), self.ctx.id);
                runtime.spawn(async move { vhost.delete_exclusive_queues(id).await });
            }
        }
    }
}

/// Serve one accepted socket to the end.
pub(super) async fn run(
    stream: Socket,
    (peer, local): (SocketAddr, SocketAddr),
    tls: Option<super::tls::TlsIdentity>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    id: u64,
) {
    let socket = Arc::new(stream);
    // Below every bound that holds a connection back (credit, reading, reading under alarm), so
    // a drain always wakes it.
    let low_water = BACKLOG_HIGH
        .min(broker.config().max_pending_output)
        .min(ALARM_PENDING_OUTPUT)
        / 2;
    let (writer, writer_task) = writer::spawn(socket.clone(), low_water);
    // Before login, frames are bounded whatever frame_max is configured (0 is "no limit").
    let pre_auth = match broker.config().frame_max {
        0 => super::handshake::PRE_AUTH_FRAME_MAX,
        n => n.min(super::handshake::PRE_AUTH_FRAME_MAX),
    };
    let mut reader = FrameReader::new(socket, pre_auth);
    let session = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&mut reader, &writer, &broker, peer, tls.as_ref()),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(HandshakeFailure::Refused(error))) => {
            close_with(&mut reader, &writer, error).await;
            finish(reader, writer, writer_task).await;
            return;
        }
        Ok(Err(HandshakeFailure::Delayed)) => {
            let mut shutdown = shutdown.clone();
            tokio::select! {
                () = tokio::time::sleep(broker.config().silent_close_delay) => {}
                _ = shutdown.changed() => {}
            }
            finish(reader, writer, writer_task).await;
            return;
        }
        Ok(Err(HandshakeFailure::Closed)) | Err(_) => {
            finish(reader, writer, writer_task).await;
            return;
        }
    };
    tracing::debug!(%peer, id, user = %session.user, vhost = session.vhost.name(), "connection open");
    let (info, killed) = ConnectionInfo::new(
        id,
        peer,
        local,
        session.user.clone(),
        session.vhost.name().to_owned(),
        session.mechanism,
        session.client_properties,
        (session.frame_max, session.channel_max, session.heartbeat),
    );
    info.tls
        .store(tls.is_some(), std::sync::atomic::Ordering::Relaxed);
    broker.connections().register(info.clone());
    // A user or vhost deleted during the handshake missed this connection when it closed the
    // registered ones: check again now that it is registered.
    if broker.access().user(&info.user).is_none() {
        info.close(&format!("user '{}' is deleted", info.user));
    } else if broker.vhost(&info.vhost).is_none() {
        info.close(&format!("vhost '{}' is deleted", info.vhost));
    }
    let (sink, inbox) = mpsc::unbounded_channel();
    let alarms = broker.alarms().subscribe();
    let mut conn = Connection {
        ctx: ConnCtx {
            id,
            broker,
            vhost: session.vhost,
            user: session.user,
            info: info.clone(),
            frame_max: super::handshake::outbound_frame_size(session.frame_max),
            capabilities: session.capabilities,
            out: BytesMut::new(),
            sink,
            writer: writer.clone(),
            pending_acks: HashMap::new(),
            pending_credit: HashMap::new(),
            deferred: Vec::new(),
        },
        channels: HashMap::new(),
        unopened: HashMap::new(),
        channel_max: session.channel_max,
        heartbeat: session.heartbeat,
        alarms,
        publishes: false,
        blocked: false,
        undecoded: false,
        exclusive_deleted: false,
        memory_alarm: false,
    };
    conn.memory_alarm = conn.alarms.borrow().memory;
    let mut shutdown_later = shutdown.clone();
    let outcome = conn.serve(&mut reader, inbox, shutdown, killed).await;
    conn.ctx.broker.connections().unregister(id);
    conn.close_channels().await;
    // The rest of the cleanup is `Connection`'s drop, which runs on a panic too.
    drop(conn);
    match outcome {
        Outcome::Close(error) => close_with(&mut reader, &writer, error).await,
        Outcome::ClientClosed => {
            tokio::select! {
                () = await_client_eof(&mut reader) => {}
                // A broker shutting down does not wait for clients to hang up. (Without a
                // shutdown sender there is no shutdown: wait for the client alone.)
                () = async {
                    if shutdown_later.wait_for(|stopping| *stopping).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {}
            }
        }
        Outcome::Eof => {}
    }
    finish(reader, writer, writer_task).await;
    tracing::debug!(%peer, id, "connection closed");
}

/// Let the writer finish, then close our side gracefully (FIN, not RST).
async fn finish(reader: FrameReader, writer: WriterHandle, task: tokio::task::JoinHandle<()>) {
    drop(writer);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, task).await;
    if let Ok(mut socket) = Arc::try_unwrap(reader.socket) {
        socket.shutdown().await;
    }
}

/// After our `close-ok`, the client closes the socket; until it does, whatever it still
/// sends is read and dropped. A client may have queued publishes behind its
/// `connection.close` (amqplib does): closing our side at once would fail its writes with
/// EPIPE and lose the close-ok's confirmation of a clean close. RabbitMQ, too, keeps reading
/// until the client hangs up (seen waiting more than 7 s; interop/python/test_closing.py).
async fn await_client_eof(reader: &mut FrameReader) {
    let drain = async { while let Ok(Some(_)) = reader.next_frame().await {} };
    if tokio::time::timeout(CLIENT_EOF_TIMEOUT, drain)
        .await
        .is_err()
    {
        tracing::debug!("client kept its socket open after close-ok; closing it");
    }
}

/// Send `connection.close` and wait (briefly) for `close-ok`, discarding anything else.
async fn close_with(reader: &mut FrameReader, writer: &WriterHandle, error: AmqpError) {
    tracing::debug!(%error, "closing connection");
    let mut out = BytesMut::new();
    encode_method(
        &mut out,
        0,
        &Method::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: error.code as u16,
            reply_text: error.reply_text(),
            class_id: error.class_id,
            method_id: error.method_id,
        })),
    );
    writer.send(out.freeze());
    let wait = async {
        loop {
            match reader.next_frame().await {
                Ok(Some(Frame::Method(_, m, _)))
                    if matches!(
                        *m,
                        Method::Connection(connection::AMQPMethod::CloseOk(_))
                            | Method::Connection(connection::AMQPMethod::Close(_))
                    ) =>
                {
                    return
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, wait).await;
}

impl Connection {
    async fn serve(
        &mut self,
        reader: &mut FrameReader,
        mut inbox: mpsc::UnboundedReceiver<ClientEvent>,
        mut shutdown: watch::Receiver<bool>,
        mut killed: mpsc::UnboundedReceiver<AmqpError>,
    ) -> Outcome {
        let mut events = Vec::with_capacity(256);
        let heartbeat = Duration::from_secs(u64::from(self.heartbeat));
        let period = if self.heartbeat > 0 {
            heartbeat / 2
        } else {
            Duration::from_secs(3600)
        };
        // The first tick a period from now, not at once: RabbitMQ sends no heartbeat right
        // after `connection.open-ok`, and a client closing at that moment may take one for a
        // reason to stop reading (amqprs 2 does, and then never sees its `close-ok`).
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_recv = Instant::now();
        let mut sent_since_tick = false;
        let mut timeouts = tokio::time::interval(CONSUMER_TIMEOUT_CHECK);
        timeouts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let drained = self.ctx.writer.drained();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    return Outcome::Close(AmqpError::new(
                        ReplyCode::ConnectionForced,
                        "broker forced connection closure with reason 'shutdown'",
                    ));
                }
                Some(error) = killed.recv() => return Outcome::Close(error),
                n = inbox.recv_many(&mut events, 256) => {
                    if n == 0 {
                        return Outcome::Eof;
                    }
                    for event in events.drain(..) {
                        self.on_event(event);
                    }
                }
                // Before the socket: a flooding publisher's socket is always readable, and a
                // biased select would never get to the alarm.
                changed = self.alarms.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    self.on_alarm_change();
                    // Not reading while blocked is not the client's silence.
                    last_recv = Instant::now();
                }
                // While blocked by an alarm, or while the client leaves too much of our output
                // unread, the socket is not read: TCP pushes back on the client.
                read = reader.fill(), if !self.blocked && !self.output_full() && !self.undecoded => {
                    match read {
                        Ok(0) | Err(_) => return Outcome::Eof,
                        Ok(n) => {
                            last_recv = Instant::now();
                            self.ctx.info.recv_oct.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            self.ctx.broker.alarms().note_input(n);
                        }
                    }
                    self.undecoded = true;
                }
                _ = ticker.tick(), if self.heartbeat > 0 => {
                    if self.blocked || self.output_full() {
                        // Not reading is our choice, not the client's silence.
                        last_recv = Instant::now();
                    }
                    if last_recv.elapsed() > heartbeat * 2 {
                        tracing::warn!(id = self.ctx.id, "missed heartbeats from client, timeout: {}s", self.heartbeat);
                        return Outcome::Eof;
                    }
                    if !sent_since_tick {
                        encode_heartbeat(&mut self.ctx.out);
                    }
                    sent_since_tick = false;
                }
                _ = timeouts.tick() => {
                    let now = Instant::now();
                    for ch in self.channels.values_mut() {
                        if !ch.unacked.is_empty() {
                            ch.check_consumer_timeout(&mut self.ctx, now);
                        }
                    }
                }
                // Only worth waiting on while credit or reading is held back by a full writer.
                _ = drained.notified(), if !self.ctx.pending_credit.is_empty() || self.output_full() => {}
            }
            if self.undecoded && !self.blocked && !self.output_full() {
                if let Some(outcome) = self.on_frames(reader, &mut inbox, &mut events).await {
                    return outcome;
                }
            }
            if self.ctx.writer.is_closed() {
                // The socket failed under the writer: nothing we send arrives any more.
                return Outcome::Eof;
            }
            sent_since_tick |= self.flush();
        }
    }

    /// Whether the client has left so much of our output unread that we stop reading its
    /// requests (which would only make more).
    fn output_full(&self) -> bool {
        self.ctx.writer.backlog() + self.ctx.out.len()
            >= self.ctx.broker.config().max_pending_output
    }

    /// Handle the frames already read, until they run out or our output is full (then the
    /// rest waits in the read buffer, and the socket is not read, until the client drains it).
    async fn on_frames(
        &mut self,
        reader: &mut FrameReader,
        inbox: &mut mpsc::UnboundedReceiver<ClientEvent>,
        events: &mut Vec<ClientEvent>,
    ) -> Option<Outcome> {
        loop {
            // An alarm that trips mid-batch stops a publisher at once, not after its batch:
            // hundreds of publishers' batches would land past the watermark.
            if self.alarms.has_changed().unwrap_or(false) {
                self.on_alarm_change();
            }
            // A blocked publisher stops at a command boundary: the publish that got it blocked
            // is taken whole, as in RabbitMQ.
            let blocked_now = self.blocked && !self.channels.values().any(Channel::mid_command);
            if self.output_full() || blocked_now {
                self.ctx.flush_out();
                return None;
            }
            let frame = match reader.decode() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.undecoded = false;
                    return None;
                }
                Err(error) => return Some(Outcome::Close(error)),
            };
            let publish = matches!(
                &frame,
                Frame::Method(_, m, _) if m.get_amqp_class_id() == 60 && m.get_amqp_method_id() == 40
            );
            if let Some(outcome) = self.on_frame(frame).await {
                return Some(outcome);
            }
            // A busy publisher's socket is always readable and its publishes take no await,
            // so without this it would keep the worker for its whole read backlog while acks
            // and deliveries of other connections wait: spending budget per frame makes it
            // yield every 128 frames (and lets the I/O driver run), which keeps consumers fed
            // under a publishing flood.
            tokio::task::consume_budget().await;
            if publish && !self.publishes {
                self.publishes = true;
                self.on_alarm_change();
            }
            if !self.ctx.deferred.is_empty() {
                self.run_deferred(inbox, events);
            }
            if self.ctx.out.len() >= OUT_CHUNK {
                self.ctx.flush_out();
            }
        }
    }

    /// Block or unblock this connection as the alarms say: a publishing connection stops being
    /// read while an alarm is on, and clients that understand it are told why.
    fn on_alarm_change(&mut self) {
        let state = *self.alarms.borrow_and_update();
        self.memory_alarm = state.memory;
        let block = state.any() && self.publishes;
        if block == self.blocked {
            return;
        }
        self.blocked = block;
        self.ctx
            .info
            .blocked
            .store(block, std::sync::atomic::Ordering::Relaxed);
        if !self.ctx.capabilities.connection_blocked {
            return;
        }
        let method = if block {
            connection::AMQPMethod::Blocked(connection::Blocked {
                reason: state.reason().into(),
            })
        } else {
            connection::AMQPMethod::Unblocked(connection::Unblocked {})
        };
        self.ctx.send_method(0, &Method::Connection(method));
    }

    /// Flush batched work; returns whether anything went to the socket.
    fn flush(&mut self) -> bool {
        self.ctx.flush_acks();
        self.ctx.flush_credit();
        for ch in self.channels.values_mut() {
            ch.flush_confirms(&mut self.ctx);
            ch.info.unacked.store(
                ch.unacked.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let wrote = !self.ctx.out.is_empty();
        self.ctx.flush_out();
        wrote
    }

    /// Handle every event already in the inbox, then the deferred replies.
    fn run_deferred(
        &mut self,
        inbox: &mut mpsc::UnboundedReceiver<ClientEvent>,
        events: &mut Vec<ClientEvent>,
    ) {
        while let Ok(event) = inbox.try_recv() {
            events.push(event);
        }
        for event in events.drain(..) {
            self.on_event(event);
        }
        for deferred in std::mem::take(&mut self.ctx.deferred) {
            match deferred {
                Deferred::CancelOk {
                    channel,
                    consumer_tag,
                    nowait,
                } => {
                    if let Some(ch) = self.channels.get_mut(&channel) {
                        ch.finish_cancel(&mut self.ctx, &consumer_tag, nowait);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Deliver(delivery) => {
                // A closed channel's consumers are gone, and their queues took back what they
                // held, this delivery included.
                if let Some(ch) = self.channels.get_mut(&delivery.channel) {
                    ch.on_delivery(&mut self.ctx, delivery);
                }
            }
            ClientEvent::Confirm { channel, seq, ack } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    if let Some(latency) = ch.on_queue_confirm(seq, ack) {
                        self.ctx.broker.confirm_latency().record(latency);
                    }
                }
            }
            ClientEvent::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.on_consumer_cancelled(&mut self.ctx, &consumer_tag);
                }
            }
        }
    }

    /// Handle one frame; `Some` ends the connection.
    async fn on_frame(&mut self, frame: Frame) -> Option<Outcome> {
        let channel_id = frame.channel();
        match frame {
            Frame::Heartbeat(0) => None,
            Frame::Method(0, method, _) => self.on_connection_method(*method),
            frame @ (Frame::Heartbeat(_) | Frame::Header(0, _) | Frame::Body(0, _)) => {
                let (frame_type, payload) = frame_payload(&frame);
                Some(Outcome::Close(AmqpError::unexpected_frame(format!(
                    "type {frame_type}, all octets = {}",
                    erlang_binary(&payload)
                ))))
            }
            frame => {
                let method_ids = match &frame {
                    Frame::Method(_, m, _) => Some((m.get_amqp_class_id(), m.get_amqp_method_id())),
                    Frame::Header(..) | Frame::Body(..) | Frame::Heartbeat(_) => None,
                };
                let assembling = self.unopened.contains_key(&channel_id);
                match (self.channels.get_mut(&channel_id), method_ids) {
                    (None, Some((20, 10))) if !assembling => self.on_channel_open(channel_id),
                    (None, _) => self.on_unopened_frame(channel_id, frame),
                    (Some(_), Some((20, 10))) => Some(Outcome::Close(
                        AmqpError::channel_error("second 'channel.open' seen").with_method(20, 10),
                    )),
                    (Some(ch), ids) => {
                        if ids != Some((60, 80)) {
                            // Batched acks go out before anything else reaches a queue.
                            self.ctx.flush_acks();
                        }
                        match ch.on_frame(&mut self.ctx, frame).await {
                            Ok(super::channel::ChannelFate::Open) => None,
                            Ok(super::channel::ChannelFate::Closed) => {
                                self.channels.remove(&channel_id);
                                self.ctx.info.remove_channel(channel_id);
                                None
                            }
                            Err(error) => Some(Outcome::Close(error)),
                        }
                    }
                }
            }
        }
    }

    /// A frame on a channel that is not open: fed to that channel number's assembler, and a
    /// complete command other than `channel.open` is refused.
    fn on_unopened_frame(&mut self, id: u16, frame: Frame) -> Option<Outcome> {
        if !self.unopened.contains_key(&id)
            && self.channels.len() + self.unopened.len() >= usize::from(self.channel_max)
        {
            // Bounded as open channels are: each may buffer one partial message.
            return Some(Outcome::Close(AmqpError::not_allowed(format!(
                "number of channels opened ({}) has reached the negotiated channel_max ({})",
                self.channels.len() + self.unopened.len(),
                self.channel_max
            ))));
        }
        let max_body = self.ctx.broker.config().max_message_size;
        let assembler = self
            .unopened
            .entry(id)
            .or_insert_with(|| CommandAssembler::new(max_body));
        match assembler.feed(frame) {
            Ok(None) => None,
            Ok(Some(command)) => {
                self.unopened.remove(&id);
                Some(Outcome::Close(
                    AmqpError::channel_error("expected 'channel.open'").with_method(
                        command.method.get_amqp_class_id(),
                        command.method.get_amqp_method_id(),
                    ),
                ))
            }
            Err(error) => Some(Outcome::Close(error)),
        }
    }

    fn on_channel_open(&mut self, id: u16) -> Option<Outcome> {
        // RabbitMQ limits how many channels are open, not the channel number.
        if self.channels.len() >= usize::from(self.channel_max) {
            return Some(Outcome::Close(AmqpError::not_allowed(format!(
                "number of channels opened ({}) has reached the negotiated channel_max ({})",
                self.channels.len(),
                self.channel_max
            ))));
        }
        let user = &self.ctx.info.user;
        let limit = self
            .ctx
            .broker
            .access()
            .user(user)
            .and_then(|u| u.limit("max-channels"));
        if let Some(limit) = limit {
            let open: usize = self
                .ctx
                .broker
                .connections()
                .all()
                .iter()
                .filter(|c| c.user == *user)
                .map(|c| c.channels().len())
                .sum();
            if open as u64 >= limit {
                return Some(Outcome::Close(AmqpError::not_allowed(format!(
                    "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})"
                ))));
            }
        }
        let channel = Channel::new(id, &self.ctx);
        self.ctx.info.add_channel(channel.info.clone());
        self.channels.insert(id, channel);
        self.ctx.send_method(
            id,
            &Method::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        );
        None
    }

    fn on_connection_method(&mut self, method: Method) -> Option<Outcome> {
        match method {
            Method::Connection(connection::AMQPMethod::Close(_)) => {
                self.ctx.send_method(
                    0,
                    &Method::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.ctx.flush_out();
                Some(Outcome::ClientClosed)
            }
            Method::Connection(connection::AMQPMethod::CloseOk(_)) => Some(Outcome::Eof),
            Method::Connection(connection::AMQPMethod::UpdateSecret(update)) => {
                crate::broker::fault::check(
                    update.new_secret.as_bytes(),
                    crate::broker::fault::PANIC_CONNECTION,
                );
                self.ctx.send_method(
                    0,
                    &Method::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                None
            }
            other => {
                let (class_id, method_id) = (other.get_amqp_class_id(), other.get_amqp_method_id());
                Some(Outcome::Close(
                    AmqpError::channel_error("unexpected method in connection state running")
                        .with_method(class_id, method_id),
                ))
            }
        }
    }

    async fn close_channels(&mut self) {
        self.ctx.flush_acks();
        for (_, mut ch) in self.channels.drain() {
            ch.release_all(&mut self.ctx);
        }
        self.ctx.vhost.delete_exclusive_queues(self.ctx.id).await;
        self.exclusive_deleted = true;
    }
}
