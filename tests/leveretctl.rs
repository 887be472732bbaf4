//! `leveretctl` against a running `leveret` binary: every command through the real HTTP API,
//! with rabbitmqctl's output shapes and exit codes, and the effect checked through lapin.

mod common;

use std::process::Command;

use common::*;

struct Ctl {
    port: u16,
}

impl Ctl {
    /// Run a command; (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_leveretctl"))
            .args(["--port", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run leveretctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        out
    }
}

#[tokio::test]
async fn rabbitmqctl_commands_manage_a_running_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, amqp) = spawn_leveret(&dir.path().join("data"));
    let ctl = Ctl { port: broker.1 };
    ctl.ok(&["await_startup", "--timeout", "10"]);
    ctl.ok(&["add_vhost", "v"]);
    ctl.ok(&["add_user", "u", "pw"]);
    let (code, _, err) = ctl.run(&["add_user", "u", "pw"]);
    assert_eq!(
        (code, err.trim()),
        (70, "Error:\nuser \"u\" already exists")
    );
    ctl.ok(&["set_user_tags", "u", "monitoring", "management"]);
    ctl.ok(&["set_permissions", "-p", "v", "u", "^c-", ".*", ".*"]);
    assert_eq!(
        ctl.ok(&["list_permissions", "-p", "v"]),
        "Listing permissions for vhost \"v\" ...\nuser\tconfigure\twrite\tread\nguest\t.*\t.*\t.*\nu\t^c-\t.*\t.*\n"
    );
    assert_eq!(
        ctl.ok(&["list_users", "-q"]),
        "name\ttags\nguest\t[administrator]\nu\t[monitoring, management]\n"
    );
    assert_eq!(
        ctl.ok(&["list_vhosts", "-q", "--no-table-headers"]),
        "/\nv\n"
    );
    // The new user works over AMQP, within its permissions.
    let uri = format!("amqp://u:pw@127.0.0.1:{amqp}/v");
    let conn = lapin::Connection::connect(&uri, Default::default())
        .await
        .expect("u connects");
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "c-q").await;
    publish(&ch, "", "c-q", b"one").await;
    publish(&ch, "", "c-q", b"two").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let listed = ctl.ok(&["list_queues", "-p", "v", "-q", "name", "messages"]);
        if listed == "name\tmessages\nc-q\t2\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let json: serde_json::Value = serde_json::from_str(&ctl.ok(&[
        "--formatter",
        "json",
        "list_connections",
        "user",
        "vhost",
    ]))
    .unwrap();
    assert_eq!(json, serde_json::json!([{"user": "u", "vhost": "v"}]));
    // Listings of every kind.
    let exchanges = ctl.ok(&["list_exchanges", "-p", "v", "-q"]);
    assert!(exchanges.starts_with("name\ttype\n"), "{exchanges}");
    assert!(exchanges.contains("amq.topic\ttopic\n"), "{exchanges}");
    let bindings = ctl.ok(&[
        "list_bindings",
        "-p",
        "v",
        "-q",
        "source",
        "destination",
        "routing_key",
    ]);
    assert_eq!(bindings, "source\tdestination\trouting_key\n\tc-q\tc-q\n");
    let consumer_ch = conn.create_channel().await.unwrap();
    let _watcher = consumer_ch
        .basic_consume(
            "c-q".into(),
            "watcher".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let consumers = ctl.ok(&[
            "list_consumers",
            "-p",
            "v",
            "-q",
            "queue_name",
            "consumer_tag",
        ]);
        if consumers == "queue_name\tconsumer_tag\nc-q\twatcher\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{consumers}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let channels = ctl.ok(&["list_channels", "-q", "user", "consumer_count"]);
    assert!(channels.contains("u\t1\n"), "{channels}");
    consumer_ch.close(200, "done".into()).await.unwrap();
    ctl.ok(&["purge_queue", "-p", "v", "c-q"]);
    assert_eq!(message_count(&ch, "c-q").await, 0);
    ctl.ok(&["set_vhost_limits", "-p", "v", r#"{"max-queues": 1}"#]);
    let err = ch
        .queue_declare("c-2".into(), Default::default(), Default::default())
        .await
        .unwrap_err();
    assert_eq!(amqp_error(&err).0, 406);
    ctl.ok(&["clear_vhost_limits", "-p", "v"]);
    ctl.ok(&[
        "set_policy",
        "-p",
        "v",
        "cap",
        "^c-",
        r#"{"max-length": 1}"#,
        "--apply-to",
        "queues",
        "--priority",
        "2",
    ]);
    assert_eq!(
        ctl.ok(&["list_policies", "-p", "v", "-q"]),
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority\nv\tcap\t^c-\tqueues\t{\"max-length\":1}\t2\n"
    );
    let (code, _, err) = ctl.run(&["set_policy", "-p", "v", "bad", "^c-", r#"{"nope": 1}"#]);
    assert_eq!(code, 70, "{err}");
    ctl.ok(&["clear_policy", "-p", "v", "cap"]);
    let defs = dir.path().join("defs.json");
    ctl.ok(&["export_definitions", defs.to_str().unwrap()]);
    // Deleting the user closes its connection; the exported definitions bring it back.
    ctl.ok(&["delete_user", "u"]);
    let (code, _, err) = ctl.run(&["delete_user", "u"]);
    assert_eq!(
        (code, err.trim()),
        (70, "Error:\nuser \"u\" does not exist")
    );
    ctl.ok(&["import_definitions", defs.to_str().unwrap()]);
    assert!(ctl
        .ok(&["list_users", "-q"])
        .contains("u\t[monitoring, management]"));
    // close_connection: the connection listed for u is closed with the given reason.
    let victim = lapin::Connection::connect(
        &format!("amqp://u:pw@127.0.0.1:{amqp}/v"),
        Default::default(),
    )
    .await
    .expect("u connects again");
    let names = ctl.ok(&["list_connections", "-q", "--no-table-headers", "name"]);
    let name = names.lines().next().expect("a connection").to_owned();
    ctl.ok(&["close_connection", &name, "maintenance"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while victim.status().connected() {
        assert!(std::time::Instant::now() < deadline, "not closed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    ctl.ok(&["change_password", "u", "pw2"]);
    let uri = format!("amqp://u:pw2@127.0.0.1:{amqp}/v");
    lapin::Connection::connect(&uri, Default::default())
        .await
        .expect("new password works");
    ctl.ok(&["delete_queue", "-p", "v", "c-q"]);
    ctl.ok(&["delete_vhost", "v"]);
    assert_eq!(ctl.ok(&["list_vhosts", "-q", "--no-table-headers"]), "/\n");
    let status = ctl.ok(&["status"]);
    assert!(status.contains("product_name: Leveret"), "{status}");
    // The HTTP listener is the one the API really runs on (it said 15672 whatever the port).
    assert!(
        status.contains(&format!("\"port\":{},\"protocol\":\"http\"", broker.1)),
        "{status}"
    );
    assert!(!status.contains("15672"), "{status}");
    // Runtime alarm limits.
    ctl.ok(&["set_vm_memory_high_watermark", "absolute", "1MB"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !ctl.ok(&["status"]).contains("memory_alarm: true") {
        assert!(std::time::Instant::now() < deadline, "alarm did not fire");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ctl.ok(&["set_vm_memory_high_watermark", "0.9"]);
    ctl.ok(&["set_disk_free_limit", "50MB"]);
    // Errors: bad usage 64, unreachable 69, wrong credentials 70.
    assert_eq!(ctl.run(&["set_vm_memory_high_watermark", "lots"]).0, 64);
    assert_eq!(Ctl { port: 1 }.run(&["status"]).0, 69);
    assert_eq!(ctl.run(&["--password", "wrong", "list_users"]).0, 70);
    drop(broker);
}

#[test]
fn every_command_has_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_leveretctl"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "list_queues",
        "list_exchanges",
        "list_bindings",
        "list_connections",
        "list_channels",
        "list_consumers",
        "close_connection",
        "purge_queue",
        "delete_queue",
        "add_vhost",
        "delete_vhost",
        "list_vhosts",
        "add_user",
        "delete_user",
        "change_password",
        "set_user_tags",
        "list_users",
        "set_permissions",
        "clear_permissions",
        "list_permissions",
        "export_definitions",
        "import_definitions",
        "status",
        "await_startup",
        "set_vm_memory_high_watermark",
        "set_disk_free_limit",
        "set_vhost_limits",
        "set_policy",
        "clear_policy",
        "list_policies",
    ] {
        assert!(help.contains(command), "{command} missing from --help");
        let sub = Command::new(env!("CARGO_BIN_EXE_leveretctl"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(sub.status.success(), "{command} --help");
    }
}
