//! One channel's state machine: command dispatch, queue/exchange methods, close and cleanup.
//!
//! A channel is a plain struct driven by its connection task. Every method a client can send has
//! an arm in [`Channel::dispatch`]; `basic.*` handlers live in `basic.rs`. Soft errors close the
//! channel (`channel.close`, then only `close-ok` is awaited); hard errors go up to the connection.
//! Invariant: every delivery tag in `unacked` is owed to exactly one queue, and on close each goes
//! back to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::basic::DIRECT_REPLY_TO;
use super::confirm::{ConfirmFrame, ConfirmTracker};
use super::connection::ConnCtx;
use crate::broker::access::{Permission, Resource};
use crate::broker::connections::ChannelInfo;
use crate::broker::exchange::Destination;
use crate::broker::queue::{ChannelLimiter, ConfirmTarget, QueueHandle, QueueStats};
use crate::broker::vhost::{check_queue_name, random_name, ExchangeDeclare, QueueDeclare, VHost};
use crate::broker::Message;
use crate::protocol::codec::{encode_confirm, ArgumentOrder};
use crate::protocol::table::{as_str, lookup};
use crate::protocol::{
    access, channel, confirm, exchange, queue, tx, AmqpError, Command, CommandAssembler,
    FieldTable, Frame, Method,
};

/// What became of a channel after a frame.
pub(super) enum ChannelFate {
    /// Still open (or closing, awaiting close-ok).
    Open,
    /// Gone: remove it.
    Closed,
}

/// A consumer registered on this channel.
pub(super) struct ConsumerEntry {
    pub(super) id: u64,
    pub(super) queue: QueueHandle,
}

/// A delivery the client has not settled.
pub(super) struct Unacked {
    pub(super) queue: QueueHandle,
    pub(super) seq: u64,
    /// The consumer it was delivered to (`None` for `basic.get`); consumer deliveries count
    /// against the channel-wide limiter.
    pub(super) consumer_id: Option<u64>,
    /// When the consumer timeout closes the channel if this is still unacked.
    pub(super) deadline: Option<Instant>,
}

/// A settlement made inside a transaction, applied at commit.
pub(super) enum TxSettle {
    Ack,
    Reject { requeue: bool },
}

#[derive(Default)]
pub(super) struct TxState {
    pub(super) publishes: Vec<(Vec<QueueHandle>, Arc<Message>)>,
    pub(super) settles: Vec<(u64, Unacked, TxSettle)>,
    /// Unroutable mandatory publishes: RabbitMQ returns them at commit, before `commit-ok`
    /// (and never, on rollback).
    pub(super) returns: Vec<Arc<Message>>,
}

/// The exchange and routing key of the last publish, shared by the next if they match: most
/// publishers repeat them, and queued messages then share one copy.
#[derive(Default)]
pub(super) struct NameCache {
    exchange: Option<Arc<str>>,
    routing_key: Option<Arc<str>>,
}

impl NameCache {
    pub(super) fn intern(&mut self, exchange: &str, routing_key: &str) -> (Arc<str>, Arc<str>) {
        let exchange = match &self.exchange {
            Some(e) if &**e == exchange => e.clone(),
            _ => self.exchange.insert(Arc::from(exchange)).clone(),
        };
        let routing_key = match &self.routing_key {
            Some(k) if &**k == routing_key => k.clone(),
            _ => self.routing_key.insert(Arc::from(routing_key)).clone(),
        };
        (exchange, routing_key)
    }
}

/// A publish permission that held at a permission generation.
pub(super) struct WriteAllowed {
    pub(super) generation: u64,
    pub(super) exchange: Arc<str>,
    /// Whether any topic permission existed then (if not, routing keys need no check).
    pub(super) topic_permissions: bool,
}

pub(super) struct Channel {
    pub(super) id: u16,
    pub(super) names: NameCache,
    assembler: CommandAssembler,
    closing: bool,
    pub(super) consumers: HashMap<Arc<str>, ConsumerEntry>,
    pub(super) prefetch_count: u32,
    pub(super) limiter: Arc<ChannelLimiter>,
    pub(super) next_delivery_tag: u64,
    pub(super) unacked: BTreeMap<u64, Unacked>,
    pub(super) confirms: Option<ConfirmTracker>,
    pub(super) tx: Option<TxState>,
    pub(super) last_queue: Option<String>,
    /// The queue behind this channel's direct reply-to consumer.
    pub(super) reply_queue: Option<String>,
    confirm_frames: Vec<ConfirmFrame>,
    /// What management sees of this channel.
    pub(super) info: Arc<ChannelInfo>,
    /// The last exchange a publish was allowed to write to: most publishers use one exchange,
    /// so the regex runs once per permission change.
    pub(super) write_allowed: Option<WriteAllowed>,
}

/// `exchange.bind`/`unbind`: write on the destination, read on the source, the default
/// exchange refused at either end (RabbitMQ's order).
fn authorize_exchange_binding(
    ctx: &ConnCtx,
    source: &str,
    destination: &str,
    key: &str,
) -> Result<(), AmqpError> {
    if destination.is_empty() {
        return Err(VHost::default_exchange_refused());
    }
    ctx.authorize(Resource::Exchange(destination), Permission::Write)?;
    if source.is_empty() {
        return Err(VHost::default_exchange_refused());
    }
    ctx.authorize(Resource::Exchange(source), Permission::Read)?;
    authorize_topic_binding(ctx, source, key)
}

/// A binding key against the user's topic read permission, for topic exchanges.
fn authorize_topic_binding(ctx: &ConnCtx, exchange: &str, key: &str) -> Result<(), AmqpError> {
    if ctx.vhost.is_topic(exchange) {
        ctx.broker.access().check_topic(
            &ctx.user,
            ctx.vhost.name(),
            exchange,
            key,
            Permission::Read,
        )?;
    }
    Ok(())
}

/// `queue.bind`/`unbind`: write on the queue, then read on the exchange (and its topic
/// permissions for the binding key), all before anything is looked up.
fn authorize_queue_binding(
    ctx: &ConnCtx,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), AmqpError> {
    ctx.authorize(Resource::Queue(queue), Permission::Write)?;
    if exchange.is_empty() {
        return Err(VHost::default_exchange_refused());
    }
    ctx.authorize(Resource::Exchange(exchange), Permission::Read)?;
    authorize_topic_binding(ctx, exchange, key)
}

/// A non-passive `queue.declare`: the reserved prefix, then configure on the (possibly
/// generated) name, then, for a new queue with a dead-letter exchange, read on the queue and
/// write on that exchange. Returns the name to declare.
fn authorize_queue_declare(
    ctx: &ConnCtx,
    name: String,
    arguments: &FieldTable,
) -> Result<String, AmqpError> {
    let name = if name.is_empty() {
        // RabbitMQ looks at the queue type first: quorum queues and streams need a name.
        let kind = crate::broker::queue::args::declared_type(arguments);
        if kind != crate::broker::queue::args::QueueType::Classic {
            return Err(AmqpError::precondition_failed(format!(
                "Cannot declare a server-named queue for type {}",
                kind.module()
            )));
        }
        random_name("amq.gen-")
    } else {
        check_queue_name(&name)?;
        name
    };
    ctx.authorize(Resource::Queue(&name), Permission::Configure)?;
    if ctx.vhost.queue_record(&name).is_none() {
        if let Some(dlx) = lookup(Some(arguments), "x-dead-letter-exchange").and_then(as_str) {
            ctx.authorize(Resource::Queue(&name), Permission::Read)?;
            ctx.authorize(Resource::Exchange(&dlx), Permission::Write)?;
        }
    }
    Ok(name)
}

fn no_previous_queue() -> AmqpError {
    AmqpError::not_found("no previously declared queue")
}

impl Channel {
    pub(super) fn new(id: u16, ctx: &ConnCtx) -> Self {
        Self {
            id,
            names: NameCache::default(),
            assembler: CommandAssembler::new(ctx.broker.config().max_message_size),
            closing: false,
            consumers: HashMap::new(),
            prefetch_count: 0,
            limiter: {
                let limiter = ChannelLimiter::default();
                limiter.set_limit(ctx.broker.config().max_unacked_per_channel);
                Arc::new(limiter)
            },
            next_delivery_tag: 1,
            unacked: BTreeMap::new(),
            confirms: None,
            tx: None,
            last_queue: None,
            reply_queue: None,
            confirm_frames: Vec::new(),
            info: Arc::new(ChannelInfo::new(id)),
            write_allowed: None,
        }
    }

    /// Whether a command's frames are partly read (a publish awaiting its header or body).
    pub(super) fn mid_command(&self) -> bool {
        !self.assembler.is_idle()
    }

    /// Handle a frame for this channel. `Err` is a connection error.
    pub(super) async fn on_frame(
        &mut self,
        ctx: &mut ConnCtx,
        frame: Frame,
    ) -> Result<ChannelFate, AmqpError> {
        if self.closing {
            // After our channel.close only close/close-ok matter; everything else is dropped.
            return Ok(match frame {
                Frame::Method(_, m, _) => match *m {
                    Method::Channel(channel::AMQPMethod::CloseOk(_)) => ChannelFate::Closed,
                    // Both sides closed at once: answer the client's close, but the channel
                    // stays until the close-ok for ours arrives, as RabbitMQ's does. Freeing
                    // it now made that close-ok a 504 on an unknown channel.
                    Method::Channel(channel::AMQPMethod::Close(_)) => {
                        ctx.send_method(
                            self.id,
                            &Method::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                        ChannelFate::Open
                    }
                    _ => ChannelFate::Open,
                },
                Frame::Header(..) | Frame::Body(..) | Frame::Heartbeat(_) => ChannelFate::Open,
            });
        }
        let command = match self.assembler.feed(frame) {
            Ok(Some(command)) => command,
            Ok(None) => return Ok(ChannelFate::Open),
            Err(error) if error.closes_connection() => return Err(error),
            Err(error) => {
                self.fail(ctx, error);
                return Ok(ChannelFate::Open);
            }
        };
        let (class_id, method_id) = (
            command.method.get_amqp_class_id(),
            command.method.get_amqp_method_id(),
        );
        match self.dispatch(ctx, command).await {
            Ok(fate) => Ok(fate),
            Err(error) => {
                let error = error.with_method(class_id, method_id);
                if error.closes_connection() {
                    Err(error)
                } else {
                    self.fail(ctx, error);
                    Ok(ChannelFate::Open)
                }
            }
        }
    }

    /// Close the channel if a delivery has been unacked past its consumer timeout (406, as
    /// RabbitMQ); its deliveries are requeued.
    pub(super) fn check_consumer_timeout(&mut self, ctx: &mut ConnCtx, now: Instant) {
        if self.closing {
            return;
        }
        let expired = self
            .unacked
            .values()
            .find(|u| u.deadline.is_some_and(|d| d <= now))
            .map(|u| consumer_timeout(ctx, &u.queue));
        if let Some(timeout) = expired {
            let error = AmqpError::precondition_failed(format!(
                "delivery acknowledgement on channel {} timed out. Timeout value used: {} ms. \
                 This timeout value can be configured, see consumers doc guide to learn more",
                self.id,
                timeout.as_millis()
            ));
            self.fail(ctx, error);
        }
    }

    /// Close the channel with a soft error.
    fn fail(&mut self, ctx: &mut ConnCtx, error: AmqpError) {
        tracing::debug!(channel = self.id, %error, "closing channel");
        ctx.send_method(
            self.id,
            &Method::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: error.code as u16,
                reply_text: error.reply_text(),
                class_id: error.class_id,
                method_id: error.method_id,
            })),
        );
        self.release_all(ctx);
        self.closing = true;
        self.assembler = CommandAssembler::new(0);
    }

    /// Give everything back: consumers go, unacked deliveries are requeued in order.
    pub(super) fn release_all(&mut self, ctx: &mut ConnCtx) {
        ctx.flush_acks();
        // A queue requeues everything a departing consumer holds, including deliveries still on
        // their way here; requeueing those again from this side could take them back from a
        // consumer that has received them since. Only the rest (basic.get, consumers cancelled
        // earlier) is requeued from here.
        let gone: Vec<u64> = self.consumers.values().map(|c| c.id).collect();
        for tag in self.consumers.keys() {
            self.info.remove_consumer(tag);
        }
        for (_, consumer) in self.consumers.drain() {
            consumer.queue.consumer_gone(consumer.id);
        }
        if let Some(tx) = self.tx.take() {
            for (tag, unacked, _) in tx.settles {
                self.unacked.insert(tag, unacked);
            }
        }
        let rest = std::mem::take(&mut self.unacked)
            .into_values()
            .filter(|u| !u.consumer_id.is_some_and(|id| gone.contains(&id)));
        for (queue, seqs) in by_queue(rest) {
            queue.requeue(seqs);
        }
    }

    /// Emit publisher confirms that are ready.
    pub(super) fn flush_confirms(&mut self, ctx: &mut ConnCtx) {
        let Some(confirms) = self.confirms.as_mut() else {
            return;
        };
        if !confirms.has_ready() {
            return;
        }
        confirms.take_frames(&mut self.confirm_frames);
        let acks = self.confirm_frames.iter().filter(|f| f.2).count() as u64;
        ctx.count(&self.info, |c| &c.confirm, acks);
        for (tag, multiple, ack) in self.confirm_frames.drain(..) {
            encode_confirm(&mut ctx.out, self.id, tag, multiple, ack);
        }
    }

    /// The queue name a method means: "" is the channel's last declared queue.
    pub(super) fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if name.is_empty() {
            self.last_queue.clone().ok_or_else(no_previous_queue)
        } else {
            Ok(name.to_owned())
        }
    }

    /// Queue and key of a queue.bind/unbind: with queue "" both default to the last declared
    /// queue (RabbitMQ's shortcut).
    fn binding_target(
        &self,
        queue: &str,
        routing_key: &str,
    ) -> Result<(String, String), AmqpError> {
        let name = self.queue_name(queue)?;
        let key = if queue.is_empty() && routing_key.is_empty() {
            name.clone()
        } else {
            routing_key.to_owned()
        };
        Ok((name, key))
    }

    async fn dispatch(
        &mut self,
        ctx: &mut ConnCtx,
        command: Command,
    ) -> Result<ChannelFate, AmqpError> {
        let Command {
            method,
            content,
            argument_order,
        } = command;
        match *method {
            Method::Channel(m) => return self.on_channel_method(ctx, m),
            Method::Exchange(m) => self.on_exchange_method(ctx, m)?,
            Method::Queue(m) => self.on_queue_method(ctx, m, argument_order).await?,
            Method::Basic(m) => self.on_basic_method(ctx, m, content).await?,
            Method::Tx(m) => self.on_tx_method(ctx, m).await?,
            Method::Confirm(confirm::AMQPMethod::Select(select)) => {
                self.on_confirm_select(ctx, select)?
            }
            Method::Confirm(confirm::AMQPMethod::SelectOk(_)) => return Err(unimplemented_method()),
            Method::Access(access::AMQPMethod::Request(_)) => ctx.send_method(
                self.id,
                &Method::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
            ),
            Method::Access(access::AMQPMethod::RequestOk(_)) => return Err(unimplemented_method()),
            Method::Connection(_) => return Err(unimplemented_method()),
        }
        Ok(ChannelFate::Open)
    }

    fn on_channel_method(
        &mut self,
        ctx: &mut ConnCtx,
        method: channel::AMQPMethod,
    ) -> Result<ChannelFate, AmqpError> {
        match method {
            channel::AMQPMethod::Close(_) => {
                self.release_all(ctx);
                ctx.send_method(
                    self.id,
                    &Method::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(ChannelFate::Closed)
            }
            channel::AMQPMethod::CloseOk(_) => Err(unimplemented_method()),
            channel::AMQPMethod::Flow(flow) => {
                if !flow.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                ctx.send_method(
                    self.id,
                    &Method::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: true,
                    })),
                );
                Ok(ChannelFate::Open)
            }
            channel::AMQPMethod::FlowOk(_) => Ok(ChannelFate::Open),
            channel::AMQPMethod::Open(_) | channel::AMQPMethod::OpenOk(_) => {
                Err(unimplemented_method())
            }
        }
    }

    fn on_exchange_method(
        &mut self,
        ctx: &mut ConnCtx,
        method: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let reply = match method {
            exchange::AMQPMethod::Declare(d) => {
                let name = d.exchange.as_str();
                if !name.is_empty() && !d.passive {
                    ctx.authorize(Resource::Exchange(name), Permission::Configure)?;
                    // Only a new exchange's alternate exchange is checked, as in RabbitMQ.
                    // A new `amq.` name is refused (by the vhost) before these.
                    if let Some(ae) = lookup(Some(&d.arguments), "alternate-exchange")
                        .and_then(as_str)
                        .filter(|_| !ctx.vhost.has_exchange(name) && !name.starts_with("amq."))
                    {
                        ctx.authorize(Resource::Exchange(name), Permission::Read)?;
                        ctx.authorize(Resource::Exchange(&ae), Permission::Write)?;
                    }
                }
                ctx.vhost.declare_exchange(&ExchangeDeclare {
                    name: d.exchange.to_string(),
                    kind: d.kind.to_string(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                })?;
                (!d.nowait).then_some(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}))
            }
            exchange::AMQPMethod::Delete(d) => {
                if !d.exchange.as_str().is_empty() {
                    ctx.authorize(
                        Resource::Exchange(d.exchange.as_str()),
                        Permission::Configure,
                    )?;
                }
                ctx.vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                (!d.nowait).then_some(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {}))
            }
            exchange::AMQPMethod::Bind(b) => {
                authorize_exchange_binding(
                    ctx,
                    b.source.as_str(),
                    b.destination.as_str(),
                    b.routing_key.as_str(),
                )?;
                ctx.vhost.set_binding(
                    b.source.as_str(),
                    Destination::Exchange(b.destination.to_string()),
                    b.routing_key.as_str(),
                    &b.arguments,
                    ctx.id,
                    true,
                )?;
                (!b.nowait).then_some(exchange::AMQPMethod::BindOk(exchange::BindOk {}))
            }
            exchange::AMQPMethod::Unbind(b) => {
                authorize_exchange_binding(
                    ctx,
                    b.source.as_str(),
                    b.destination.as_str(),
                    b.routing_key.as_str(),
                )?;
                ctx.vhost.set_binding(
                    b.source.as_str(),
                    Destination::Exchange(b.destination.to_string()),
                    b.routing_key.as_str(),
                    &b.arguments,
                    ctx.id,
                    false,
                )?;
                (!b.nowait).then_some(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}))
            }
            exchange::AMQPMethod::DeclareOk(_)
            | exchange::AMQPMethod::DeleteOk(_)
            | exchange::AMQPMethod::BindOk(_)
            | exchange::AMQPMethod::UnbindOk(_) => return Err(unimplemented_method()),
        };
        if let Some(reply) = reply {
            ctx.send_method(self.id, &Method::Exchange(reply));
        }
        Ok(())
    }

    async fn on_queue_method(
        &mut self,
        ctx: &mut ConnCtx,
        method: queue::AMQPMethod,
        argument_order: ArgumentOrder,
    ) -> Result<(), AmqpError> {
        let reply = match method {
            queue::AMQPMethod::Declare(d) => {
                // No last-queue shortcut here: RabbitMQ looks up '' literally for a passive declare.
                let name = d.queue.to_string();
                let (name, stats) = if name == DIRECT_REPLY_TO {
                    // RabbitMQ answers for the pseudo-queue whatever the flags, so clients can
                    // check that direct reply-to is supported.
                    let stats = QueueStats {
                        consumers: 1,
                        ..QueueStats::default()
                    };
                    (name, stats)
                } else {
                    let name = if d.passive {
                        name
                    } else {
                        authorize_queue_declare(ctx, name, &d.arguments)?
                    };
                    ctx.vhost
                        .declare_queue(
                            &QueueDeclare {
                                name,
                                passive: d.passive,
                                durable: d.durable,
                                exclusive: d.exclusive,
                                auto_delete: d.auto_delete,
                                arguments: d.arguments,
                                argument_order: argument_order.map(Vec::from).unwrap_or_default(),
                            },
                            ctx.id,
                        )
                        .await?
                };
                self.last_queue = Some(name.clone());
                (!d.nowait).then_some(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: name.into(),
                    message_count: stats.messages,
                    consumer_count: stats.consumers,
                }))
            }
            queue::AMQPMethod::Bind(b) => {
                let (name, key) = self.binding_target(b.queue.as_str(), b.routing_key.as_str())?;
                authorize_queue_binding(ctx, &name, b.exchange.as_str(), &key)?;
                ctx.vhost.set_binding(
                    b.exchange.as_str(),
                    Destination::Queue(name),
                    &key,
                    &b.arguments,
                    ctx.id,
                    true,
                )?;
                (!b.nowait).then_some(queue::AMQPMethod::BindOk(queue::BindOk {}))
            }
            queue::AMQPMethod::Unbind(b) => {
                let (name, key) = self.binding_target(b.queue.as_str(), b.routing_key.as_str())?;
                authorize_queue_binding(ctx, &name, b.exchange.as_str(), &key)?;
                ctx.vhost.set_binding(
                    b.exchange.as_str(),
                    Destination::Queue(name),
                    &key,
                    &b.arguments,
                    ctx.id,
                    false,
                )?;
                Some(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}))
            }
            queue::AMQPMethod::Purge(p) => {
                let name = self.queue_name(p.queue.as_str())?;
                ctx.authorize(Resource::Queue(&name), Permission::Read)?;
                let count = ctx.vhost.queue(&name, ctx.id)?.purge().await?;
                (!p.nowait).then_some(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                    message_count: count,
                }))
            }
            queue::AMQPMethod::Delete(d) => {
                let name = self.queue_name(d.queue.as_str())?;
                ctx.authorize(Resource::Queue(&name), Permission::Configure)?;
                let count = ctx
                    .vhost
                    .delete_queue(&name, d.if_unused, d.if_empty, ctx.id)
                    .await?;
                (!d.nowait).then_some(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count: count,
                }))
            }
            queue::AMQPMethod::DeclareOk(_)
            | queue::AMQPMethod::BindOk(_)
            | queue::AMQPMethod::UnbindOk(_)
            | queue::AMQPMethod::PurgeOk(_)
            | queue::AMQPMethod::DeleteOk(_) => return Err(unimplemented_method()),
        };
        if let Some(reply) = reply {
            ctx.send_method(self.id, &Method::Queue(reply));
        }
        Ok(())
    }

    async fn on_tx_method(
        &mut self,
        ctx: &mut ConnCtx,
        method: tx::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let reply = match method {
            tx::AMQPMethod::Select(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                self.tx.get_or_insert_with(TxState::default);
                self.info
                    .transactional
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tx::AMQPMethod::SelectOk(tx::SelectOk {})
            }
            tx::AMQPMethod::Commit(_) => {
                let state = self
                    .tx
                    .replace(TxState::default())
                    .ok_or_else(not_transactional)?;
                for message in &state.returns {
                    self.send_return(ctx, message);
                }
                commit(ctx, state).await;
                tx::AMQPMethod::CommitOk(tx::CommitOk {})
            }
            tx::AMQPMethod::Rollback(_) => {
                let state = self
                    .tx
                    .replace(TxState::default())
                    .ok_or_else(not_transactional)?;
                for (tag, unacked, _) in state.settles {
                    self.unacked.insert(tag, unacked);
                }
                tx::AMQPMethod::RollbackOk(tx::RollbackOk {})
            }
            tx::AMQPMethod::SelectOk(_)
            | tx::AMQPMethod::CommitOk(_)
            | tx::AMQPMethod::RollbackOk(_) => return Err(unimplemented_method()),
        };
        ctx.send_method(self.id, &Method::Tx(reply));
        Ok(())
    }

    fn on_confirm_select(
        &mut self,
        ctx: &mut ConnCtx,
        select: confirm::Select,
    ) -> Result<(), AmqpError> {
        if self.tx.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from tx to confirm mode",
            ));
        }
        self.confirms.get_or_insert_with(ConfirmTracker::new);
        self.info
            .confirm
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if !select.nowait {
            ctx.send_method(
                self.id,
                &Method::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
            );
        }
        Ok(())
    }
}

/// Apply a transaction, and return once what it stored is on disk: `commit-ok` promises what
/// a confirm does. Publishes a queue stores (persistent, durable queue) and settlements on
/// durable queues are awaited through the group commit; the rest need no sync.
async fn commit(ctx: &mut ConnCtx, state: TxState) {
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut awaited = 0usize;
    let mut touched: Vec<QueueHandle> = Vec::new();
    for (queues, message) in &state.publishes {
        for queue in queues {
            let target = queue.answers_confirm(message).then(|| {
                awaited += 1;
                ConfirmTarget::Waiter(done.clone())
            });
            queue.publish(message.clone(), target).await;
        }
    }
    // Acks go straight to their queues (not batched) so the sync below comes after them.
    let mut acks: Vec<Unacked> = Vec::new();
    for (_, unacked, settle) in state.settles {
        if unacked.queue.stores_persistent()
            && !touched.iter().any(|q| q.id() == unacked.queue.id())
        {
            touched.push(unacked.queue.clone());
        }
        match settle {
            TxSettle::Ack => acks.push(unacked),
            TxSettle::Reject { requeue: true } => unacked.queue.requeue(vec![unacked.seq]),
            TxSettle::Reject { requeue: false } => unacked.queue.reject(vec![unacked.seq]),
        }
    }
    ctx.flush_acks();
    for (queue, seqs) in by_queue(acks) {
        queue.ack(seqs);
    }
    for queue in &touched {
        awaited += 1;
        queue.sync(ConfirmTarget::Waiter(done.clone()));
    }
    drop(done);
    // A queue that goes away drops its target unanswered, which ends the wait too.
    while awaited > 0 && answers.recv().await.is_some() {
        awaited -= 1;
    }
}

/// Sequence numbers of deliveries, grouped by the queue they came from (one command per queue).
pub(super) fn by_queue(
    deliveries: impl IntoIterator<Item = Unacked>,
) -> Vec<(QueueHandle, Vec<u64>)> {
    let mut groups: Vec<(QueueHandle, Vec<u64>)> = Vec::new();
    for u in deliveries {
        match groups.iter_mut().find(|(q, _)| q.id() == u.queue.id()) {
            Some((_, seqs)) => seqs.push(u.seq),
            None => groups.push((u.queue, vec![u.seq])),
        }
    }
    groups
}

fn not_transactional() -> AmqpError {
    AmqpError::precondition_failed("channel is not transactional")
}

/// A method a client never sends (a server-side method or reply).
/// The consumer timeout for deliveries from `queue`.
pub(super) fn consumer_timeout(ctx: &ConnCtx, queue: &QueueHandle) -> Duration {
    queue
        .consumer_timeout()
        .map(Duration::from_millis)
        .or(ctx.broker.config().consumer_timeout)
        .unwrap_or(Duration::MAX)
}

/// When a delivery made now times out.
pub(super) fn delivery_deadline(ctx: &ConnCtx, queue: &QueueHandle) -> Option<Instant> {
    Instant::now().checked_add(consumer_timeout(ctx, queue))
}

pub(super) fn unimplemented_method() -> AmqpError {
    AmqpError::command_invalid("unimplemented method")
}

#[cfg(test)]
mod tests;
