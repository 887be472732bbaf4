//! The `basic` class on a channel: publish, consume/cancel, deliveries, get, ack/nack/reject,
//! qos and recover.
//!
//! Publishing routes in this task and hands one `Arc<Message>` to every target queue's work lane.
//! Deliveries arrive from queue actors through the connection inbox; each gets the channel's next
//! delivery tag and, unless no-ack, a place in `unacked` until settled.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::channel::{
    by_queue, delivery_deadline, unimplemented_method, Channel, ConsumerEntry, TxSettle, Unacked,
    WriteAllowed,
};
use super::connection::{ConnCtx, Deferred};
use crate::broker::access::{Permission, Resource};
use crate::broker::connections::ConsumerInfo;
use crate::broker::queue::args::{parse_consumer_priority, parse_expiration};
use crate::broker::queue::{ConfirmTarget, ConsumeRequest, Delivery, QueueHandle};
use crate::broker::vhost::random_name;
use crate::broker::Message;
use crate::protocol::codec::{encode_content, encode_deliver, encode_get_ok, encode_properties};
use crate::protocol::{basic, AMQPValue, AmqpError, Content, Method, ReplyCode};

static NEXT_CONSUMER_ID: AtomicU64 = AtomicU64::new(1);

/// The pseudo-queue of direct reply-to.
pub(super) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn routing_keys<'a>(
    routing_key: &'a str,
    headers: Option<&'a crate::protocol::FieldTable>,
) -> (Vec<&'a str>, bool) {
    let mut keys = vec![routing_key];
    let mut has_bcc = false;
    if let Some(h) = headers {
        for (name, is_bcc) in [("CC", false), ("BCC", true)] {
            if let Some(AMQPValue::FieldArray(list)) = h.inner().get(name) {
                has_bcc |= is_bcc;
                for v in list.as_slice() {
                    if let AMQPValue::LongString(s) = v {
                        if let Ok(s) = std::str::from_utf8(s.as_bytes()) {
                            keys.push(s);
                        }
                    } else if let AMQPValue::ShortString(s) = v {
                        keys.push(s.as_str());
                    }
                }
            }
        }
    }
    (keys, has_bcc)
}

/// What RabbitMQ checks as it builds a message from a publish (after `user_id` and
/// `expiration`), in its order: `CC` and `BCC` are arrays (their non-string elements are
/// ignored), and the delivery mode is absent, 1 or 2.
fn check_message(properties: &crate::protocol::Properties) -> Result<(), AmqpError> {
    let invalid =
        |reason: String| AmqpError::precondition_failed(format!("invalid message: {reason}"));
    if let Some(headers) = properties.headers() {
        for name in ["CC", "BCC"] {
            match headers.inner().get(name) {
                None | Some(AMQPValue::FieldArray(_)) => {}
                Some(other) => {
                    return Err(invalid(format!(
                        "{{unacceptable_type_in_header,\"{name}\",{}}}",
                        crate::protocol::table::type_name(other)
                    )))
                }
            }
        }
    }
    match properties.delivery_mode() {
        None | Some(1) | Some(2) => {}
        Some(other) => return Err(invalid(format!("{{delivery_mode_unknown,{other}}}"))),
    }
    Ok(())
}

impl Channel {
    pub(super) async fn on_basic_method(
        &mut self,
        ctx: &mut ConnCtx,
        method: basic::AMQPMethod,
        content: Option<Content>,
    ) -> Result<(), AmqpError> {
        match method {
            basic::AMQPMethod::Publish(p) => match content {
                Some(content) => self.on_basic_publish(ctx, p, content).await,
                None => Err(AmqpError::unexpected_frame("publish without content")),
            },
            basic::AMQPMethod::Consume(c) => self.on_basic_consume(ctx, c).await,
            basic::AMQPMethod::Cancel(c) => self.on_basic_cancel(ctx, c).await,
            basic::AMQPMethod::Get(g) => self.on_basic_get(ctx, g).await,
            basic::AMQPMethod::Ack(a) => self.on_basic_ack(ctx, a.delivery_tag, a.multiple),
            basic::AMQPMethod::Nack(n) => {
                self.on_basic_reject(ctx, n.delivery_tag, n.multiple, n.requeue)
            }
            basic::AMQPMethod::Reject(r) => {
                self.on_basic_reject(ctx, r.delivery_tag, false, r.requeue)
            }
            basic::AMQPMethod::Qos(q) => self.on_basic_qos(ctx, q),
            basic::AMQPMethod::Recover(r) => self.on_basic_recover(ctx, r.requeue, true),
            basic::AMQPMethod::RecoverAsync(r) => self.on_basic_recover(ctx, r.requeue, false),
            basic::AMQPMethod::QosOk(_)
            | basic::AMQPMethod::ConsumeOk(_)
            | basic::AMQPMethod::CancelOk(_)
            | basic::AMQPMethod::Return(_)
            | basic::AMQPMethod::Deliver(_)
            | basic::AMQPMethod::GetOk(_)
            | basic::AMQPMethod::GetEmpty(_)
            | basic::AMQPMethod::RecoverOk(_) => Err(unimplemented_method()),
        }
    }

    /// Write permission on the exchange (cached for the channel's last exchange while no
    /// permission changes), and the topic permission on the routing key.
    fn authorize_publish(
        &mut self,
        ctx: &ConnCtx,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        let access = ctx.broker.access();
        let generation = access.generation();
        let topic_permissions = match &self.write_allowed {
            Some(cache) if cache.generation == generation && &*cache.exchange == exchange => {
                cache.topic_permissions
            }
            _ => {
                ctx.authorize(Resource::Exchange(exchange), Permission::Write)?;
                let topic_permissions = access.has_topic_permissions();
                self.write_allowed = Some(WriteAllowed {
                    generation,
                    exchange: Arc::from(exchange),
                    topic_permissions,
                });
                topic_permissions
            }
        };
        // The exchange's type is looked up each time: it may be redeclared as another type.
        if topic_permissions && ctx.vhost.is_topic(exchange) {
            access.check_topic(
                &ctx.user,
                ctx.vhost.name(),
                exchange,
                routing_key,
                Permission::Write,
            )?;
        }
        Ok(())
    }

    async fn on_basic_publish(
        &mut self,
        ctx: &mut ConnCtx,
        p: basic::Publish,
        content: Content,
    ) -> Result<(), AmqpError> {
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        self.authorize_publish(ctx, p.exchange.as_str(), p.routing_key.as_str())?;
        let confirm_seq = self.confirms.as_mut().map(|c| c.next_seq());
        let mut queues: Vec<QueueHandle> = Vec::new();
        let has_bcc = {
            let (keys, has_bcc) = routing_keys(
                p.routing_key.as_str(),
                content.properties.headers().as_ref(),
            );
            ctx.vhost.route(
                p.exchange.as_str(),
                &keys,
                content.properties.headers().as_ref(),
                &mut queues,
            )?;
            has_bcc
        };
        // After routing (a missing exchange is 404 first), as in RabbitMQ.
        // Direct reply-to is resolved as the content is decoded, before the checks below.
        let reply_to = match content.properties.reply_to() {
            Some(r) if r.as_str() == DIRECT_REPLY_TO => match &self.reply_queue {
                Some(name) => Some(name.clone()),
                None => {
                    return Err(AmqpError::precondition_failed(
                        "fast reply consumer does not exist",
                    ))
                }
            },
            _ => None,
        };
        if let Some(user_id) = content.properties.user_id() {
            if user_id.as_str() != ctx.user && !ctx.may_impersonate() {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    user_id.as_str(),
                    ctx.user
                )));
            }
        }
        let persistent = *content.properties.delivery_mode() == Some(2);
        let expiration = content
            .properties
            .expiration()
            .as_ref()
            .map(|e| parse_expiration(e.as_str()))
            .transpose()?;
        check_message(&content.properties)?;
        let priority = content.properties.priority().unwrap_or(0);
        // BCC is stripped from the bytes as sent, so the rest of the headers stays exactly as
        // the publisher wrote it (duplicate keys included, as RabbitMQ keeps them).
        let stripped = has_bcc
            .then(|| crate::protocol::nesting::strip_header(&content.raw_properties, "BCC"))
            .flatten();
        let raw_properties = if let (Some(stripped), None) = (stripped, &reply_to) {
            bytes::Bytes::from(stripped)
        } else if has_bcc || reply_to.is_some() {
            let mut properties = content.properties.clone();
            if has_bcc {
                let mut stripped = crate::protocol::FieldTable::default();
                for (k, v) in properties.headers().clone().unwrap_or_default().inner() {
                    if k.as_str() != "BCC" {
                        stripped.insert(k.clone(), v.clone());
                    }
                }
                properties = properties.with_headers(stripped);
            }
            if let Some(name) = reply_to {
                properties = properties.with_reply_to(name.as_str().into());
            }
            encode_properties(&properties)
        } else {
            content.raw_properties
        };
        let (exchange, routing_key) = self
            .names
            .intern(p.exchange.as_str(), p.routing_key.as_str());
        let message = Arc::new(
            Message::new(
                exchange,
                routing_key,
                raw_properties,
                content.body,
                persistent,
            )
            .with_queue_properties(priority, expiration),
        );
        ctx.count(&self.info, |c| &c.publish, 1);
        if queues.is_empty() {
            ctx.count(&self.info, |c| &c.unroutable, 1);
            if p.mandatory {
                match self.tx.as_mut() {
                    Some(tx) => tx.returns.push(message),
                    None => self.send_return(ctx, &message),
                }
            }
        } else if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push((queues, message));
        } else {
            // Queues that store this message (or may refuse it) confirm it themselves. Read once:
            // a policy change may flip it between a count and a publish.
            let answers: Vec<bool> = queues.iter().map(|q| q.answers_confirm(&message)).collect();
            let storing = answers.iter().filter(|a| **a).count() as u32;
            let seq = match (confirm_seq, self.confirms.as_mut()) {
                (Some(seq), Some(confirms)) if storing > 0 => {
                    confirms.expect(seq, storing);
                    Some(seq)
                }
                _ => None,
            };
            for (queue, answers) in queues.iter().zip(answers) {
                let target = seq.filter(|_| answers).map(|seq| ConfirmTarget::Publisher {
                    sink: ctx.sink.clone(),
                    channel: self.id,
                    seq,
                });
                queue.publish(message.clone(), target).await;
            }
            if seq.is_some() {
                return Ok(());
            }
        }
        if let (Some(seq), Some(confirms)) = (confirm_seq, self.confirms.as_mut()) {
            confirms.settle(seq, true);
        }
        Ok(())
    }

    /// `basic.return` NO_ROUTE for an unroutable mandatory publish, with its content.
    pub(super) fn send_return(&self, ctx: &mut ConnCtx, message: &Message) {
        ctx.send_method(
            self.id,
            &Method::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: ReplyCode::NoRoute as u16,
                reply_text: "NO_ROUTE".into(),
                exchange: crate::protocol::short_string(&message.exchange),
                routing_key: crate::protocol::short_string(&message.routing_key),
            })),
        );
        encode_content(
            &mut ctx.out,
            self.id,
            &message.raw_properties,
            &message.body,
            ctx.frame_max,
        );
    }

    async fn on_basic_consume(
        &mut self,
        ctx: &mut ConnCtx,
        c: basic::Consume,
    ) -> Result<(), AmqpError> {
        let reply_to = c.queue.as_str() == DIRECT_REPLY_TO;
        if reply_to {
            if !c.no_ack {
                return Err(AmqpError::precondition_failed(
                    "reply consumer cannot acknowledge",
                ));
            }
            if self.reply_queue.is_some() {
                return Err(AmqpError::precondition_failed("reply consumer already set"));
            }
        }
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            Arc::from(random_name("amq.ctag-"))
        } else {
            Arc::from(c.consumer_tag.as_str())
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let queue = if reply_to {
            // Checked before the reply queue exists, so a bad argument leaves nothing behind.
            parse_consumer_priority(
                c.arguments.inner().get("x-priority"),
                &format!("queue '{DIRECT_REPLY_TO}' in vhost '{}'", ctx.vhost.name()),
            )?;
            ctx.vhost.declare_reply_queue(ctx.id)
        } else {
            let name = self.queue_name(c.queue.as_str())?;
            ctx.authorize(Resource::Queue(&name), Permission::Read)?;
            ctx.vhost.queue(&name, ctx.id)?
        };
        let priority = parse_consumer_priority(
            c.arguments.inner().get("x-priority"),
            &format!("queue '{}' in vhost '{}'", queue.name(), ctx.vhost.name()),
        )?;
        let id = NEXT_CONSUMER_ID.fetch_add(1, Ordering::Relaxed);
        let consumed = queue
            .consume(ConsumeRequest {
                consumer_id: id,
                connection_id: ctx.id,
                channel: self.id,
                tag: tag.clone(),
                prefetch: self.prefetch_count,
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                priority,
                limiter: self.limiter.clone(),
                sink: ctx.sink.clone(),
                arguments: c.arguments.clone(),
            })
            .await;
        if let Err(error) = consumed {
            if reply_to {
                let _ = ctx
                    .vhost
                    .delete_queue(queue.name(), false, false, ctx.id)
                    .await;
            }
            return Err(error);
        }
        if reply_to {
            self.reply_queue = Some(queue.name().to_owned());
        }
        self.info.add_consumer(ConsumerInfo {
            tag: tag.to_string(),
            queue: queue.name().to_owned(),
            ack_required: !c.no_ack,
            exclusive: c.exclusive,
            prefetch_count: self.prefetch_count,
            arguments: c.arguments.clone(),
        });
        self.consumers
            .insert(tag.clone(), ConsumerEntry { id, queue });
        if !c.nowait {
            ctx.send_method(
                self.id,
                &Method::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_ref().into(),
                })),
            );
        }
        Ok(())
    }

    async fn on_basic_cancel(
        &mut self,
        ctx: &mut ConnCtx,
        c: basic::Cancel,
    ) -> Result<(), AmqpError> {
        let tag: Arc<str> = Arc::from(c.consumer_tag.as_str());
        match self.consumers.get(&tag) {
            Some(consumer) => {
                consumer.queue.cancel(consumer.id).await;
                ctx.deferred.push(Deferred::CancelOk {
                    channel: self.id,
                    consumer_tag: tag,
                    nowait: c.nowait,
                });
            }
            None => {
                if !c.nowait {
                    self.send_cancel_ok(ctx, &tag);
                }
            }
        }
        Ok(())
    }

    fn send_cancel_ok(&self, ctx: &mut ConnCtx, tag: &str) {
        ctx.send_method(
            self.id,
            &Method::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                consumer_tag: tag.into(),
            })),
        );
    }

    /// After the inbox is drained: forget the consumer and confirm the cancel.
    pub(super) fn finish_cancel(&mut self, ctx: &mut ConnCtx, tag: &Arc<str>, nowait: bool) {
        self.info.remove_consumer(tag);
        if let Some(consumer) = self.consumers.remove(tag) {
            if self.reply_queue.as_deref() == Some(consumer.queue.name()) {
                self.reply_queue = None;
            }
        }
        if !nowait {
            self.send_cancel_ok(ctx, tag);
        }
    }

    /// A queue's answer for a publish in confirm mode.
    pub(super) fn on_queue_confirm(&mut self, seq: u64, ack: bool) -> Option<std::time::Duration> {
        self.confirms.as_mut()?.queue_answered(seq, ack)
    }

    /// The queue dropped a consumer (it was deleted): tell clients that understand it.
    pub(super) fn on_consumer_cancelled(&mut self, ctx: &mut ConnCtx, tag: &Arc<str>) {
        let removed = self.consumers.remove(tag);
        self.info.remove_consumer(tag);
        if let Some(consumer) = &removed {
            if self.reply_queue.as_deref() == Some(consumer.queue.name()) {
                self.reply_queue = None;
            }
        }
        if removed.is_some() && ctx.capabilities.consumer_cancel_notify {
            ctx.send_method(
                self.id,
                &Method::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: tag.as_ref().into(),
                    nowait: true,
                })),
            );
        }
    }

    /// A message from a queue for one of this channel's consumers.
    pub(super) fn on_delivery(&mut self, ctx: &mut ConnCtx, d: Delivery) {
        if !self.consumers.contains_key(&d.consumer_tag) {
            // The consumer is gone (its channel closed, or its queue was deleted): the queue
            // already took back everything it held, this delivery included.
            return;
        }
        ctx.count(&self.info, |c| &c.deliver, 1);
        if d.redelivered {
            ctx.count(&self.info, |c| &c.redeliver, 1);
        }
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        let m = &d.message;
        encode_deliver(
            &mut ctx.out,
            self.id,
            &d.consumer_tag,
            tag,
            d.redelivered,
            &m.exchange,
            &m.routing_key,
        );
        encode_content(
            &mut ctx.out,
            self.id,
            &m.raw_properties,
            &m.body,
            ctx.frame_max,
        );
        ctx.credit_later(&d.queue, d.consumer_id);
        if !d.no_ack {
            let deadline = delivery_deadline(ctx, &d.queue);
            self.unacked.insert(
                tag,
                Unacked {
                    queue: d.queue,
                    seq: d.seq,
                    consumer_id: Some(d.consumer_id),
                    deadline,
                },
            );
        }
    }

    async fn on_basic_get(&mut self, ctx: &mut ConnCtx, g: basic::Get) -> Result<(), AmqpError> {
        let name = self.queue_name(g.queue.as_str())?;
        ctx.authorize(Resource::Queue(&name), Permission::Read)?;
        let queue = ctx.vhost.queue(&name, ctx.id)?;
        match queue.get(g.no_ack).await? {
            Some(r) => {
                ctx.count(&self.info, |c| &c.get, 1);
                let tag = self.next_delivery_tag;
                self.next_delivery_tag += 1;
                let m = &r.message;
                encode_get_ok(
                    &mut ctx.out,
                    self.id,
                    tag,
                    r.redelivered,
                    &m.exchange,
                    &m.routing_key,
                    r.remaining,
                );
                encode_content(
                    &mut ctx.out,
                    self.id,
                    &m.raw_properties,
                    &m.body,
                    ctx.frame_max,
                );
                if !g.no_ack {
                    let deadline = delivery_deadline(ctx, &queue);
                    self.unacked.insert(
                        tag,
                        Unacked {
                            queue,
                            seq: r.seq,
                            consumer_id: None,
                            deadline,
                        },
                    );
                }
                // The channel owns it now: unacked, it is requeued when the channel closes.
                r.guard.claim();
            }
            None => ctx.send_method(
                self.id,
                &Method::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            ),
        }
        Ok(())
    }

    /// Remove the deliveries an ack/nack/reject names.
    fn take_settled(
        &mut self,
        tag: u64,
        multiple: bool,
    ) -> Result<BTreeMap<u64, Unacked>, AmqpError> {
        let unknown = || AmqpError::precondition_failed(format!("unknown delivery tag {tag}"));
        if multiple {
            if tag == 0 {
                return Ok(std::mem::take(&mut self.unacked));
            }
            if !self.unacked.contains_key(&tag) {
                return Err(unknown());
            }
            let rest = self.unacked.split_off(&(tag + 1));
            Ok(std::mem::replace(&mut self.unacked, rest))
        } else {
            let u = self.unacked.remove(&tag).ok_or_else(unknown)?;
            Ok(BTreeMap::from([(tag, u)]))
        }
    }

    fn release_limiter(&self, settled: &BTreeMap<u64, Unacked>) {
        let n = settled.values().filter(|u| u.consumer_id.is_some()).count() as u32;
        if n == 0 {
            return;
        }
        let was_full = self.limiter.is_full();
        self.limiter.release(n);
        if was_full {
            let mut woken: HashMap<u64, ()> = HashMap::new();
            for c in self.consumers.values() {
                if woken.insert(c.queue.id(), ()).is_none() {
                    c.queue.wake();
                }
            }
        }
    }

    fn on_basic_ack(
        &mut self,
        ctx: &mut ConnCtx,
        tag: u64,
        multiple: bool,
    ) -> Result<(), AmqpError> {
        let settled = self.take_settled(tag, multiple)?;
        self.release_limiter(&settled);
        ctx.count(&self.info, |c| &c.ack, settled.len() as u64);
        if let Some(tx) = self.tx.as_mut() {
            tx.settles
                .extend(settled.into_iter().map(|(t, u)| (t, u, TxSettle::Ack)));
            return Ok(());
        }
        for u in settled.values() {
            ctx.ack_later(&u.queue, u.seq);
        }
        Ok(())
    }

    fn on_basic_reject(
        &mut self,
        _ctx: &mut ConnCtx,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), AmqpError> {
        let settled = self.take_settled(tag, multiple)?;
        self.release_limiter(&settled);
        if let Some(tx) = self.tx.as_mut() {
            tx.settles.extend(
                settled
                    .into_iter()
                    .map(|(t, u)| (t, u, TxSettle::Reject { requeue })),
            );
            return Ok(());
        }
        for (queue, seqs) in by_queue(settled.into_values()) {
            if requeue {
                queue.requeue(seqs);
            } else {
                queue.reject(seqs);
            }
        }
        Ok(())
    }

    fn on_basic_qos(&mut self, ctx: &mut ConnCtx, q: basic::Qos) -> Result<(), AmqpError> {
        // prefetch_size != 0 is refused in the codec: amq-protocol does not expose the field.
        let counter = if q.global {
            &self.info.global_prefetch_count
        } else {
            &self.info.prefetch_count
        };
        counter.store(u32::from(q.prefetch_count), Ordering::Relaxed);
        if q.global {
            // The broker's cap, if any, bounds whatever the client asks for.
            let cap = ctx.broker.config().max_unacked_per_channel;
            let asked = u32::from(q.prefetch_count);
            let limit = match (asked, cap) {
                (0, cap) => cap,
                (asked, 0) => asked,
                (asked, cap) => asked.min(cap),
            };
            self.limiter.set_limit(limit);
            for c in self.consumers.values() {
                c.queue.wake();
            }
        } else {
            self.prefetch_count = u32::from(q.prefetch_count);
        }
        ctx.send_method(
            self.id,
            &Method::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        Ok(())
    }

    fn on_basic_recover(
        &mut self,
        ctx: &mut ConnCtx,
        requeue: bool,
        reply: bool,
    ) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        self.on_basic_reject(ctx, 0, true, true)?;
        if reply {
            ctx.send_method(
                self.id,
                &Method::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
            );
        }
        Ok(())
    }
}
