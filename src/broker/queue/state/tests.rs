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
}
