//! Definitions import (`POST /api/definitions`) on arbitrary JSON, into a fresh in-memory
//! broker: it imports or refuses, never panics, and what it imported exports again.
#![no_main]

use std::sync::{Arc, OnceLock};

use leveret::admin::{import_definitions, AdminState};
use leveret::broker::{Broker, BrokerConfig};
use leveret::store::MemoryStore;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(defs)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    runtime().block_on(async {
        let broker =
            Broker::open(BrokerConfig::default(), Arc::new(MemoryStore::new())).expect("broker");
        let state = AdminState {
            broker: broker.clone(),
            rates: Default::default(),
            amqp_ports: vec![],
            http_ports: vec![],
            limits: Default::default(),
        };
        let _ = import_definitions(&state, &defs).await;
        broker.shutdown(std::time::Duration::from_secs(1)).await;
    });
});
