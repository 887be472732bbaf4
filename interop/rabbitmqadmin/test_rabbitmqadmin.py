"""RabbitMQ's own rabbitmqadmin (3.10.8, from Debian's rabbitmq-server package) against the
broker's HTTP management API: list, declare, delete, publish, get, definitions.

Environment: RABBITMQADMIN (path of the script), MGMT_PORT (the management port)."""

import json
import os
import subprocess
import uuid

import pytest

ADMIN = os.environ["RABBITMQADMIN"]
PORT = os.environ["MGMT_PORT"]


def admin(*args, check=True):
    result = subprocess.run(
        ["python3", ADMIN, "-H", "127.0.0.1", "-P", PORT, "-u", "guest", "-p", "guest", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def rows(*args):
    return json.loads(admin("-f", "raw_json", *args).stdout)


@pytest.fixture
def name():
    return "ra-" + uuid.uuid4().hex[:8]


def test_list_commands_print_tables():
    for kind, header in [
        ("queues", "name"),
        ("exchanges", "name"),
        ("vhosts", "name"),
        ("users", "name"),
        ("bindings", "source"),
    ]:
        out = admin("list", kind).stdout
        lines = out.splitlines()
        assert out.strip() == "No items" or header in lines[1].split("|")[1], (kind, out)
    exchanges = admin("list", "exchanges", "name", "type").stdout
    assert "amq.topic" in exchanges and "topic" in exchanges


def test_declare_publish_get_and_delete_a_queue(name):
    admin("declare", "queue", f"name={name}", "durable=true")
    assert any(q["name"] == name and q["durable"] for q in rows("list", "queues"))
    assert "Message published" in admin("publish", f"routing_key={name}", "payload=hello").stdout
    out = admin("get", f"queue={name}", "ackmode=ack_requeue_false").stdout
    assert "hello" in out, out
    assert "No items" in admin("get", f"queue={name}").stdout
    admin("delete", "queue", f"name={name}")
    assert not any(q["name"] == name for q in rows("list", "queues"))


def test_exchanges_and_bindings(name):
    admin("declare", "exchange", f"name={name}-x", "type=fanout")
    admin("declare", "queue", f"name={name}")
    admin("declare", "binding", f"source={name}-x", f"destination={name}", "routing_key=k")
    bindings = rows("list", "bindings")
    assert any(b["source"] == f"{name}-x" and b["destination"] == name for b in bindings)
    admin("publish", f"exchange={name}-x", "routing_key=any", "payload=fanned")
    assert "fanned" in admin("get", f"queue={name}", "ackmode=ack_requeue_false").stdout
    admin("delete", "binding", f"source={name}-x", f"destination={name}", "destination_type=queue", "properties_key=k")
    assert not any(b["source"] == f"{name}-x" for b in rows("list", "bindings"))
    admin("delete", "exchange", f"name={name}-x")
    admin("delete", "queue", f"name={name}")


def test_vhosts_users_and_permissions(name):
    admin("declare", "vhost", f"name={name}")
    admin("declare", "user", f"name={name}", "password=pw", "tags=monitoring")
    admin("declare", "permission", f"vhost={name}", f"user={name}", "configure=.*", "write=.*", "read=.*")
    assert any(p["user"] == name and p["vhost"] == name for p in rows("list", "permissions"))
    assert any(u["name"] == name and u["tags"] in (["monitoring"], "monitoring") for u in rows("list", "users"))
    admin("delete", "user", f"name={name}")
    admin("delete", "vhost", f"name={name}")
    assert not any(v["name"] == name for v in rows("list", "vhosts"))


def test_missing_objects_are_reported(name):
    result = admin("delete", "queue", f"name={name}", check=False)
    assert result.returncode != 0
    assert "Not found" in result.stdout + result.stderr


def test_definitions_export_and_import(tmp_path, name):
    admin("declare", "queue", f"name={name}", "durable=true")
    path = tmp_path / "defs.json"
    admin("export", str(path))
    defs = json.loads(path.read_text())
    assert any(q["name"] == name for q in defs["queues"])
    admin("delete", "queue", f"name={name}")
    admin("import", str(path))
    assert any(q["name"] == name for q in rows("list", "queues"))
    admin("delete", "queue", f"name={name}")
