//! Kill -9 torture: mixed load against a `leveret` process killed with SIGKILL at a random
//! moment, restarted on the same data directory, and checked, round after round.
//!
//! The load: a publisher under confirms, a transactional publisher (commits of 1 to 20
//! publishes), a consumer that acks some of the confirmed messages, a consumer that rejects
//! messages of a source queue into a dead-letter queue (both durable), and queues declared,
//! filled and deleted; bodies small (16 B) and large (200 KB). After each restart every message
//! is drained and checked:
//! - every confirmed or committed message is present (at least once; a message whose ack was
//!   sent may come back, acked or not, and a dead-lettered one may be in either queue);
//! - every message present is whole (its length and byte pattern), never torn.
//!
//! `LEVERET_TORTURE_ROUNDS` sets the rounds (default 20, as CI runs); the README has the result
//! of a 1,000-round run.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const CONFIRMED: &str = "t.confirm";
const TX: &str = "t.tx";
const SOURCE: &str = "t.src";
const DEAD: &str = "t.dead";

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A body that says whether it is whole: id, length, then a pattern derived from the id.
fn body(id: u64, large: bool) -> Vec<u8> {
    let len = if large { 200_000 } else { 16 };
    let mut b = Vec::with_capacity(16 + len);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&(len as u64).to_be_bytes());
    b.extend((0..len).map(|i| (id as usize).wrapping_add(i) as u8));
    b
}

/// The id of a whole body; panics on a torn one.
fn check(bytes: &[u8], queue: &str) -> u64 {
    assert!(
        bytes.len() >= 16,
        "a torn message in {queue}: {} bytes",
        bytes.len()
    );
    let id = u64::from_be_bytes(bytes[..8].try_into().unwrap());
    let len = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 16 + len, "message {id} in {queue} is torn");
    assert!(
        bytes[16..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (id as usize).wrapping_add(i) as u8),
        "message {id} in {queue} is corrupt"
    );
    id
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

#[derive(Default)]
struct Ledger {
    /// Confirmed (ack) or committed: must survive.
    safe: HashSet<u64>,
    /// An ack was sent for it: it may be gone.
    acked: HashSet<u64>,
}

async fn connect(port: u16) -> Connection {
    Connection::connect(
        &format!("amqp://127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .expect("connect")
}

async fn declare_all(ch: &Channel) {
    for q in [CONFIRMED, TX, DEAD] {
        ch.queue_declare(q.into(), common::durable(), FieldTable::default())
            .await
            .unwrap();
    }
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(DEAD.into()),
    );
    ch.queue_declare(SOURCE.into(), common::durable(), args)
        .await
        .unwrap();
}

/// One round's load until the connection dies under it.
async fn load(port: u16, round: u64, seed: u64, ledger: Arc<Mutex<Ledger>>) {
    let conn = connect(port).await;
    let ch = conn.create_channel().await.unwrap();
    declare_all(&ch).await;
    let base = round << 32;
    // A JoinSet: when the round gives up on this load, dropping it aborts every task.
    let mut tasks = tokio::task::JoinSet::new();

    // Confirmed publishes, to the acked queue and to the dead-lettering source.
    let (ch1, l1) = (conn.create_channel().await.unwrap(), ledger.clone());
    tasks.spawn(async move {
        ch1.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut rng = Rng(seed ^ 1);
        let mut pending = std::collections::VecDeque::new();
        for i in 0.. {
            let id = base | i;
            let queue = if rng.below(3) == 0 { SOURCE } else { CONFIRMED };
            let Ok(confirm) = ch1
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body(id, rng.below(10) == 0),
                    persistent(),
                )
                .await
            else {
                return;
            };
            pending.push_back((id, confirm));
            while pending.len() > 20 {
                let (id, confirm) = pending.pop_front().unwrap();
                match confirm.await {
                    Ok(c) if c.is_ack() => {
                        l1.lock().unwrap().safe.insert(id);
                    }
                    _ => return,
                }
            }
        }
    });

    // Transactions of 1-20 publishes.
    let (ch2, l2) = (conn.create_channel().await.unwrap(), ledger.clone());
    tasks.spawn(async move {
        ch2.tx_select().await.unwrap();
        let mut rng = Rng(seed ^ 2);
        let mut next = 1u64 << 31;
        loop {
            let n = 1 + rng.below(20);
            let ids: Vec<u64> = (0..n).map(|k| base | (next + k)).collect();
            next += n;
            for &id in &ids {
                if ch2
                    .basic_publish(
                        "".into(),
                        TX.into(),
                        BasicPublishOptions::default(),
                        &body(id, rng.below(10) == 0),
                        persistent(),
                    )
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if ch2.tx_commit().await.is_err() {
                return;
            }
            l2.lock().unwrap().safe.extend(ids);
        }
    });

    // Acks some confirmed messages (noted before the ack is sent).
    let (ch3, l3) = (conn.create_channel().await.unwrap(), ledger.clone());
    tasks.spawn(async move {
        ch3.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let Ok(mut consumer) = ch3
            .basic_consume(
                CONFIRMED.into(),
                "acker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            return;
        };
        let mut rng = Rng(seed ^ 3);
        while let Some(Ok(d)) = consumer.next().await {
            let id = check(&d.data, CONFIRMED);
            if rng.below(2) == 0 {
                l3.lock().unwrap().acked.insert(id);
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
            } else if d
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });

    // Dead-letters the source queue into the dead-letter queue.
    let ch4 = conn.create_channel().await.unwrap();
    tasks.spawn(async move {
        ch4.basic_qos(20, BasicQosOptions::default()).await.unwrap();
        let Ok(mut consumer) = ch4
            .basic_consume(
                SOURCE.into(),
                "rejecter".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            return;
        };
        while let Some(Ok(d)) = consumer.next().await {
            check(&d.data, SOURCE);
            if d.reject(BasicRejectOptions { requeue: false })
                .await
                .is_err()
            {
                return;
            }
        }
    });

    // Queues declared, filled and deleted.
    let ch5 = conn.create_channel().await.unwrap();
    tasks.spawn(async move {
        for k in 0.. {
            let name = format!("t.tmp.{round}.{k}");
            if ch5
                .queue_declare(
                    name.as_str().into(),
                    common::durable(),
                    FieldTable::default(),
                )
                .await
                .is_err()
            {
                return;
            }
            for _ in 0..20 {
                let _ = ch5
                    .basic_publish(
                        "".into(),
                        name.as_str().into(),
                        BasicPublishOptions::default(),
                        &body(0, false),
                        persistent(),
                    )
                    .await;
            }
            if ch5
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    while tasks.join_next().await.is_some() {}
}

/// Every message in `queue`, checked whole; counts by id.
async fn drain(ch: &Channel, queue: &str, seen: &mut HashMap<u64, u32>) {
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        *seen.entry(check(&m.delivery.data, queue)).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_torture_loses_and_tears_nothing() {
    let rounds: u64 = std::env::var("LEVERET_TORTURE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("torture: {rounds} rounds, seed {seed0}");
    let (mut total_safe, mut total_seen) = (0usize, 0usize);
    for round in 0..rounds {
        let seed = seed0.wrapping_add(round.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        let mut rng = Rng(seed);
        let ledger: Arc<Mutex<Ledger>> = Arc::default();
        let (child, port) = common::spawn_leveret(&data);
        let running = tokio::spawn(load(port, round + 1, seed, ledger.clone()));
        tokio::time::sleep(Duration::from_millis(100 + rng.below(700))).await;
        drop(child); // SIGKILL: no shutdown path runs.
        let mut running = running;
        if tokio::time::timeout(Duration::from_secs(20), &mut running)
            .await
            .is_err()
        {
            // Clients stuck on the dead broker: abort them (the JoinSet aborts the rest).
            running.abort();
        }

        let (child, port) = common::spawn_leveret(&data);
        let conn = connect(port).await;
        let ch = conn.create_channel().await.unwrap();
        declare_all(&ch).await;
        let mut seen = HashMap::new();
        for q in [CONFIRMED, TX, SOURCE, DEAD] {
            drain(&ch, q, &mut seen).await;
        }
        let ledger = ledger.lock().unwrap();
        let lost: Vec<u64> = ledger
            .safe
            .iter()
            .filter(|id| !seen.contains_key(id) && !ledger.acked.contains(id))
            .copied()
            .collect();
        assert!(
            lost.is_empty(),
            "round {round} (seed {seed}): {} confirmed or committed messages lost, e.g. {:x?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        total_safe += ledger.safe.len();
        total_seen += seen.len();
        // The drain's removals must be on disk before the next round kills the broker.
        drop(conn);
        child.stop_gracefully();
        if (round + 1) % 50 == 0 {
            eprintln!(
                "torture: {} rounds done, {total_safe} confirmed or committed so far",
                round + 1
            );
        }
    }
    eprintln!(
        "torture: {rounds} rounds, {total_safe} confirmed or committed, {total_seen} recovered, none lost or torn"
    );
    assert!(
        total_safe > 0,
        "the load confirmed nothing: the test measured nothing"
    );
}
