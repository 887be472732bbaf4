//! Unit tests of the queue state machine: ordering, acks and requeues, limits and policies,
//! paging.

use super::*;

mod basics {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::mpsc;

    fn msg(body: &'static str) -> Arc<Message> {
        Arc::new(Message::new(
            Arc::from(""),
            Arc::from("q"),
            Bytes::from_static(&[0, 0]),
            Bytes::from_static(body.as_bytes()),
            false,
        ))
    }

    fn consumer(id: u64, prefetch: u32, no_ack: bool) -> Consumer {
        consumer_with_priority(id, prefetch, no_ack, 0)
    }

    /// A consumer on channel 1 of connection 1, tagged `c{id}`.
    pub(super) fn consumer_with_priority(
        id: u64,
        prefetch: u32,
        no_ack: bool,
        priority: i32,
    ) -> Consumer {
        let (tx, _rx) = mpsc::unbounded_channel();
        Consumer::from(ConsumeRequest {
            consumer_id: id,
            connection_id: 1,
            channel: 1,
            tag: Arc::from(format!("c{id}")),
            prefetch,
            no_ack,
            exclusive: false,
            priority,
            limiter: Arc::new(ChannelLimiter::default()),
            sink: tx,
            arguments: Default::default(),
        })
    }

    pub(super) fn in_use() -> AmqpError {
        AmqpError::access_refused("in exclusive use")
    }

    #[test]
    fn prefetch_limits_deliveries_until_ack() {
        let mut q = QueueState::default();
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        q.add_consumer(consumer(1, 2, false), in_use).unwrap();
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(q.ready_len(), 1);
        q.settle(&[out[0].1.seq]);
        out.clear();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0].1.message, Slot::Resident(m) if &m.body[..] == b"c"));
    }

    #[test]
    fn requeue_restores_original_order_and_marks_redelivered() {
        let mut q = QueueState::default();
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        let (a, _) = q.get(false).unwrap();
        let (b, _) = q.get(false).unwrap();
        q.requeue(&[b.seq, a.seq], true);
        let order: Vec<_> = (0..3).map(|_| q.get(true).unwrap().0).collect();
        assert_eq!(
            order.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![a.seq, b.seq, a.seq + 2]
        );
        assert!(order[0].redelivered && order[1].redelivered && !order[2].redelivered);
    }

    #[test]
    fn round_robin_skips_consumers_without_credit() {
        let mut q = QueueState::default();
        q.add_consumer(consumer(1, 1, false), in_use).unwrap();
        q.add_consumer(consumer(2, 0, false), in_use).unwrap();
        for b in ["a", "b", "c", "d"] {
            q.publish(msg(b));
        }
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        let to: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
        assert_eq!(to, vec![0, 1, 1, 1]);
    }

    #[test]
    fn exclusive_consumer_excludes_others() {
        let mut q = QueueState::default();
        let mut c = consumer(1, 0, false);
        c.exclusive = true;
        q.add_consumer(c, in_use).unwrap();
        assert!(q.add_consumer(consumer(2, 0, false), in_use).is_err());
    }

    #[test]
    fn in_flight_window_bounds_no_ack_consumers() {
        let mut q = QueueState::default();
        q.add_consumer(consumer(1, 0, true), in_use).unwrap();
        for _ in 0..(IN_FLIGHT_WINDOW + 10) {
            q.publish(msg("x"));
        }
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        assert_eq!(out.len() as u32, IN_FLIGHT_WINDOW);
        q.credit(1, 5);
        out.clear();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(q.unacked_len(), 0);
    }

    #[test]
    fn channel_limiter_is_shared() {
        let mut q = QueueState::default();
        let limiter = Arc::new(ChannelLimiter::default());
        limiter.set_limit(1);
        let mut a = consumer(1, 0, false);
        a.limiter = limiter.clone();
        let mut b = consumer(2, 0, false);
        b.limiter = limiter.clone();
        q.add_consumer(a, in_use).unwrap();
        q.add_consumer(b, in_use).unwrap();
        q.publish(msg("a"));
        q.publish(msg("b"));
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 1);
        limiter.release(1);
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 2);
    }
}

mod policies {
    use super::basics::in_use;
    use super::*;
    use bytes::Bytes;

    fn slot(body: &'static str) -> Slot {
        Slot::Resident(Arc::new(Message::new(
            Arc::from(""),
            Arc::from("q"),
            Bytes::from_static(&[0, 0]),
            Bytes::from_static(body.as_bytes()),
            false,
        )))
    }

    fn body(e: &Entry) -> String {
        match &e.message {
            Slot::Resident(m) => String::from_utf8_lossy(&m.body).into_owned(),
            Slot::Paged { .. } => String::new(),
        }
    }

    fn consumer(id: u64, prefetch: u32, priority: i32) -> Consumer {
        basics::consumer_with_priority(id, prefetch, false, priority)
    }

    #[test]
    fn priorities_deliver_highest_first_fifo_within_and_clamp_to_max() {
        let mut q = QueueState::new(StateConfig {
            max_priority: Some(5),
            ..StateConfig::default()
        });
        for (b, p) in [("a", 0), ("b", 9), ("c", 5), ("d", 3), ("e", 5)] {
            q.publish_entry(slot(b), None, p);
        }
        let order: Vec<String> = (0..5).map(|_| body(&q.get(true).unwrap().0)).collect();
        assert_eq!(order, vec!["b", "c", "e", "d", "a"]);
    }

    #[test]
    fn requeued_messages_reenter_by_priority() {
        let mut q = QueueState::new(StateConfig {
            max_priority: Some(2),
            ..StateConfig::default()
        });
        q.publish_entry(slot("low"), None, 0);
        let (low, _) = q.get(false).unwrap();
        q.publish_entry(slot("high"), None, 2);
        q.requeue(&[low.seq], true);
        assert_eq!(body(&q.get(true).unwrap().0), "high");
        let again = q.get(true).unwrap().0;
        assert_eq!(body(&again), "low");
        assert!(again.redelivered);
    }

    #[test]
    fn only_heads_expire_and_the_next_expiry_is_the_earliest_head() {
        let mut q = QueueState::default();
        q.publish_entry(slot("a"), Some(100), 0);
        q.publish_entry(slot("b"), Some(50), 0);
        q.publish_entry(slot("c"), None, 0);
        assert_eq!(q.next_expiry(), Some(100));
        let mut out = Vec::new();
        q.expire(100, &mut out);
        assert!(out.is_empty(), "bound is exclusive");
        q.expire(101, &mut out);
        // "b" expired earlier but sat behind "a": it goes as soon as it is the head.
        assert_eq!(out.iter().map(body).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(q.ready_len(), 1);
        assert_eq!(q.next_expiry(), None);
    }

    #[test]
    fn length_limits_count_ready_messages_and_body_bytes() {
        let mut q = QueueState::default();
        q.publish_entry(slot("12345"), None, 0);
        q.publish_entry(slot("12345678"), None, 0);
        assert!(q.would_overflow(Some(2), None, 1));
        assert!(!q.would_overflow(Some(3), None, 1));
        assert!(q.would_overflow(None, Some(20), 8));
        let mut out = Vec::new();
        q.drop_over_limit(None, Some(10), &mut out);
        assert_eq!(out.iter().map(body).collect::<Vec<_>>(), vec!["12345"]);
        assert_eq!(q.ready_bytes(), 8);
        let (held, _) = q.get(false).unwrap();
        out.clear();
        q.drop_over_limit(Some(0), None, &mut out);
        assert!(out.is_empty(), "unacked messages do not count");
        q.requeue(&[held.seq], true);
        q.drop_over_limit(Some(0), None, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn returns_beyond_the_delivery_limit_die_and_releases_do_not_count() {
        let mut q = QueueState::new(StateConfig {
            delivery_limit: Some(1),
            ..StateConfig::default()
        });
        q.publish_entry(slot("m"), None, 0);
        let (m, _) = q.get(false).unwrap();
        q.requeue(&[m.seq], false);
        let (m, _) = q.get(false).unwrap();
        assert_eq!(m.deliveries, 1, "a release gives the delivery back");
        q.requeue(&[m.seq], true);
        assert!(q.take_over_delivery_limit().is_empty());
        let (m, _) = q.get(false).unwrap();
        assert_eq!(m.deliveries, 2);
        q.requeue(&[m.seq], true);
        let dead = q.take_over_delivery_limit();
        assert_eq!(dead.len(), 1);
        assert_eq!(q.ready_len(), 0);
    }

    #[test]
    fn higher_priority_consumers_are_served_first_while_they_have_credit() {
        let mut q = QueueState::default();
        q.add_consumer(consumer(1, 0, 0), in_use).unwrap();
        q.add_consumer(consumer(2, 1, 10), in_use).unwrap();
        q.add_consumer(consumer(3, 0, 0), in_use).unwrap();
        for b in ["a", "b", "c", "d", "e"] {
            q.publish_entry(slot(b), None, 0);
        }
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        let to: Vec<u64> = out.iter().map(|(i, _)| q.consumers()[*i].id).collect();
        assert_eq!(to, vec![2, 1, 3, 1, 3]);
    }

    #[test]
    fn single_active_consumer_gets_everything_until_it_leaves() {
        let mut q = QueueState::new(StateConfig {
            single_active_consumer: true,
            ..StateConfig::default()
        });
        q.add_consumer(consumer(1, 0, 0), in_use).unwrap();
        q.add_consumer(consumer(2, 0, 5), in_use).unwrap();
        assert_eq!(
            q.active_consumer(),
            Some(1),
            "a later consumer does not take over"
        );
        for b in ["a", "b", "c"] {
            q.publish_entry(slot(b), None, 0);
        }
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        assert!(out.iter().all(|(i, _)| q.consumers()[*i].id == 1));
        q.remove_consumer(1, true);
        assert_eq!(q.active_consumer(), Some(2));
        out.clear();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|(_, e)| e.redelivered));
    }
}

mod paging {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn resident_bytes_count_only_messages_in_memory() {
        let mut q = QueueState::default();
        let m = Arc::new(Message::new(
            Arc::from(""),
            Arc::from("q"),
            Bytes::from_static(&[0, 0]),
            Bytes::from(vec![1u8; 100]),
            true,
        ));
        q.publish(m);
        q.publish_slot(Slot::Paged {
            body_len: 1000,
            scratch: true,
        });
        assert_eq!((q.ready_bytes(), q.resident_bytes()), (1100, 100));
        let (first, _) = q.get(false).unwrap();
        assert_eq!((q.ready_bytes(), q.resident_bytes()), (1000, 0));
        q.requeue(&[first.seq], true);
        assert_eq!((q.ready_bytes(), q.resident_bytes()), (1100, 100));
        q.purge();
        assert_eq!((q.ready_bytes(), q.resident_bytes()), (0, 0));
    }

    fn paged(body_len: u32, scratch: bool) -> Slot {
        Slot::Paged { body_len, scratch }
    }

    #[test]
    fn a_deep_queue_of_paged_messages_is_a_few_runs() {
        let mut q = QueueState::default();
        for i in 0..100_000u32 {
            q.publish_slot(paged(16, false));
            // A change of size keeps the run (sizes kept per message); a change of space
            // starts a new one.
            if i == 50_000 {
                q.publish_slot(paged(17, false));
                q.publish_slot(paged(17, true));
            }
        }
        assert_eq!(q.ready.items(), 3);
        assert_eq!(q.ready_bytes(), 100_000 * 16 + 34);
        q.ready.check();
        let mut last = 0;
        let mut bytes = 0;
        while let Some((e, _)) = q.get(true) {
            assert!(e.seq > last);
            last = e.seq;
            bytes += e.message.body_len();
        }
        assert_eq!(bytes, 100_000 * 16 + 34);
        assert_eq!((q.ready_len(), q.ready_bytes()), (0, 0));
    }

    /// One step of a random workload.
    #[derive(Debug, Clone)]
    enum Step {
        Publish {
            body_len: u32,
            scratch: bool,
            ttl: bool,
            priority: u8,
            resident: bool,
        },
        Get {
            ack: bool,
        },
        RequeueAll,
        Expire,
        Purge,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0u32..3, any::<bool>(), proptest::bool::weighted(0.1), 0u8..3, proptest::bool::weighted(0.1))
                .prop_map(|(l, scratch, ttl, priority, resident)| Step::Publish {
                    body_len: [16, 70_000, 5][l as usize],
                    scratch,
                    ttl,
                    priority,
                    resident,
                }),
            3 => any::<bool>().prop_map(|ack| Step::Get { ack }),
            1 => Just(Step::RequeueAll),
            1 => Just(Step::Expire),
            1 => Just(Step::Purge),
        ]
    }

    proptest::proptest! {
        /// Runs change nothing a client can see: the same entries come out, in the same order,
        /// with the same counts and bytes, as from a queue of one entry per message.
        #[test]
        fn runs_agree_with_a_plain_model(
            max_priority in proptest::option::of(0u8..3),
            steps in proptest::collection::vec(step(), 0..300),
        ) {
            let config = StateConfig { max_priority, ..StateConfig::default() };
            let mut q = QueueState::new(config);
            let levels = max_priority.unwrap_or(0);
            let level = |p: u8| max_priority.map_or(0, |m| p.min(m));
            // The model: ready entries (any order) and those held unacked.
            let mut ready: Vec<Entry> = Vec::new();
            let mut held: Vec<Entry> = Vec::new();
            let head = |ready: &[Entry], l: u8| -> Option<usize> {
                ready.iter().enumerate().filter(|(_, e)| e.priority == l)
                    .min_by_key(|(_, e)| e.seq).map(|(i, _)| i)
            };
            let key = |e: &Entry| {
                let space = match e.message {
                    Slot::Resident(_) => 0,
                    Slot::Paged { scratch, .. } => 1 + u8::from(scratch),
                };
                (e.seq, e.message.body_len(), space, e.priority, e.redelivered, e.expires_at)
            };
            let mut clock = 0u64;
            for s in steps {
                clock += 1;
                match s {
                    Step::Publish { body_len, scratch, ttl, priority, resident } => {
                        let slot = if resident {
                            Slot::Resident(Arc::new(Message::new(
                                Arc::from(""), Arc::from("q"), Bytes::from_static(&[0, 0]),
                                Bytes::from(vec![0u8; body_len as usize]), false)))
                        } else {
                            paged(body_len, scratch)
                        };
                        let expires = ttl.then_some(clock + 5);
                        let seq = q.publish_entry(slot.clone(), expires, priority);
                        ready.push(Entry::new(seq, slot, expires, level(priority)));
                    }
                    Step::Get { ack } => {
                        let got = q.get(!ack).map(|(e, _)| e);
                        let want = (0..=levels).rev().find_map(|l| head(&ready, l)).map(|i| ready.remove(i));
                        proptest::prop_assert_eq!(got.as_ref().map(key), want.as_ref().map(key));
                        if let (Some(mut e), true) = (want, ack) {
                            e.deliveries += 1;
                            held.push(e);
                        }
                    }
                    Step::RequeueAll => {
                        let seqs: Vec<u64> = held.iter().map(|e| e.seq).collect();
                        q.requeue(&seqs, true);
                        for mut e in held.drain(..) {
                            e.redelivered = true;
                            ready.push(e);
                        }
                    }
                    Step::Expire => {
                        let mut out = Vec::new();
                        q.expire(clock, &mut out);
                        let mut want = Vec::new();
                        // Only heads expire, the lowest level's first.
                        while let Some(i) = (0..=levels)
                            .filter_map(|l| head(&ready, l))
                            .find(|&i| ready[i].expires_at < clock)
                        {
                            want.push(ready.remove(i).seq);
                        }
                        proptest::prop_assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), want);
                    }
                    Step::Purge => {
                        let got: Vec<u64> = q.purge().iter().map(|e| e.seq).collect();
                        ready.sort_by_key(|e| e.seq);
                        let want: Vec<u64> = ready.drain(..).map(|e| e.seq).collect();
                        proptest::prop_assert_eq!(got, want);
                    }
                }
                q.ready.check();
                proptest::prop_assert_eq!(q.ready_len() as usize, ready.len());
                proptest::prop_assert_eq!(q.ready_bytes(), ready.iter().map(|e| e.message.body_len()).sum::<u64>());
                let expiry = (0..=levels).filter_map(|l| head(&ready, l).and_then(|i| ready[i].expiry())).min();
                proptest::prop_assert_eq!(q.next_expiry(), expiry);
                for e in &ready {
                    proptest::prop_assert_eq!(q.deliveries_of(e.seq), Some(e.deliveries));
                }
            }
        }
    }
}

#[test]
fn numbering_goes_on_above_the_highest_stored_number() {
    let mut backlog = Backlog::new();
    backlog.push(Entry::new(
        3,
        Slot::Paged {
            body_len: 1,
            scratch: false,
        },
        None,
        0,
    ));
    // Number 9 was stored but could not be read back: it is not given out again.
    backlog.continue_after(9);
    let q = QueueState::recovered(StateConfig::default(), backlog);
    assert_eq!((q.ready_len(), q.next_seq()), (1, 10));
}
