#!/usr/bin/env bash
# Regenerate interop/fixtures/rabbitmq-3.10.8-definitions.json: a varied topology declared on a
# running RabbitMQ from Debian's packages, exported with `rabbitmqctl export_definitions`.
# tests/definitions_fixture.rs imports it into Leveret and compares Leveret's export with it.
set -euo pipefail
cd "$(dirname "$0")"
ctl() { rabbitmqctl -q "$@" >/dev/null; }
# Idempotent: leftovers of an earlier run go first.
rabbitmqctl -q delete_vhost fixture >/dev/null 2>&1 || true
rabbitmqctl -q delete_user fx-admin >/dev/null 2>&1 || true
rabbitmqctl -q delete_user fx-mon >/dev/null 2>&1 || true
ctl add_vhost fixture
ctl set_permissions -p fixture guest '.*' '.*' '.*'
ctl add_user fx-admin secret
ctl set_user_tags fx-admin administrator
ctl add_user fx-mon watch
ctl set_user_tags fx-mon monitoring management
ctl set_permissions -p fixture fx-admin '.*' '.*' '.*'
ctl set_permissions -p fixture fx-mon '^mon-' '' '.*'
ctl set_topic_permissions -p fixture fx-mon amq.topic '^fx\.' '^fx\.'
ctl set_policy -p fixture cap '^capped-' '{"max-length": 10, "overflow": "reject-publish"}' --apply-to queues --priority 2
ctl set_policy -p fixture alt '^routed$' '{"alternate-exchange": "fx-fanout"}' --apply-to exchanges
ctl set_vhost_limits -p fixture '{"max-connections": 50, "max-queues": 200}'
python3 - <<'PY'
import pika
c = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/fixture"))
ch = c.channel()
ch.exchange_declare("fx-fanout", "fanout", durable=True)
ch.exchange_declare("routed", "topic", durable=True)
ch.exchange_declare("fx-headers", "headers", durable=True, arguments={"alternate-exchange": "fx-fanout"})
ch.queue_declare("capped-1", durable=True)
ch.queue_declare("orders", durable=True, arguments={"x-message-ttl": 60000, "x-dead-letter-exchange": "fx-fanout", "x-max-priority": 5})
ch.queue_declare("mon-events", durable=True, arguments={"x-expires": 3600000})
ch.queue_declare("lazy-ish", durable=False, auto_delete=True)
ch.queue_bind("orders", "routed", "order.*")
ch.queue_bind("mon-events", "fx-fanout", "")
ch.queue_bind("capped-1", "fx-headers", "", arguments={"x-match": "any", "kind": "a"})
ch.exchange_bind("fx-fanout", "routed", "audit.#")
c.close()
PY
mkdir -p fixtures
rabbitmqctl -q export_definitions - > fixtures/rabbitmq-3.10.8-definitions.json
rabbitmqctl -q delete_vhost fixture
rabbitmqctl -q delete_user fx-admin
rabbitmqctl -q delete_user fx-mon
