//! The Mosquitto ACL shipped in `deploy/mosquitto/` confines each cabinet to its own
//! topics: tested against a real Mosquitto (started here on a free port with that ACL
//! and a password file made with `mosquitto_passwd`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A connected client: what it receives arrives on the channel.
async fn client(port: u16, user: &str, password: &str) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let mut opts = MqttOptions::new(format!("{user}-{}", uuid::Uuid::new_v4().simple()), "127.0.0.1", port);
    opts.set_credentials(user, password).set_keep_alive(Duration::from_secs(5));
    let (c, mut ev) = AsyncClient::new(opts, 32);
    let (tx, rx) = mpsc::unbounded_channel();
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = up_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), up_rx.recv()).await.expect("connected").unwrap();
    (c, rx)
}

/// Everything a client received until `topic` arrived (or `wait` passed).
async fn received_until(
    rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    topic: &str,
    wait: Duration,
) -> Vec<(String, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = Vec::new();
    while let Ok(Some((t, p))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let done = t == topic;
        seen.push((t, p));
        if done {
            break;
        }
    }
    seen
}

fn topics(seen: &[(String, Vec<u8>)]) -> Vec<&str> {
    seen.iter().map(|(t, _)| t.as_str()).collect()
}

/// A Mosquitto on a free port with the shipped ACL and these users.
fn acl_broker(users: &[(&str, &str)]) -> (Broker, u16, tempfile::TempDir) {
    acl_broker_with(users, "", "", None)
}

/// As [`acl_broker`], with `more` appended to the password file (lines of
/// `fleet-server mqtt-passwd`).
/// With `tls`, the listener speaks only TLS with that certificate.
fn acl_broker_with(
    users: &[(&str, &str)],
    more: &str,
    more_acl: &str,
    tls: Option<&common::TestPki>,
) -> (Broker, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    for (i, (user, pw)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd.arg("-b").arg(&passwd).arg(user).arg(pw).status().expect("mosquitto_passwd is installed");
        assert!(status.success());
    }
    let mut file = std::fs::OpenOptions::new().append(true).open(&passwd).unwrap();
    std::io::Write::write_all(&mut file, more.as_bytes()).unwrap();
    drop(file);
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/lockerfleet.acl");
    // The shipped file, with what `fleet-server mqtt-passwd --acl` prints appended.
    let acl = dir.path().join("lockerfleet.acl");
    std::fs::write(&acl, format!("{}\n{more_acl}", std::fs::read_to_string(&shipped).unwrap())).unwrap();
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    let tls = tls.map(|p| format!("certfile {}\nkeyfile {}\n", p.cert.display(), p.key.display())).unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ),
    )
    .unwrap();
    let broker = Broker(
        Command::new("mosquitto").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (broker, port, dir)
}

#[actix_rt::test]
async fn the_shipped_acl_confines_every_cabinet_to_its_own_topics() {
    let (_broker, port, _dir) =
        acl_broker(&[("lockerfleet-server", "server-pw"), ("cab-a", "a-pw"), ("cab-b", "b-pw")]);
    let (server, mut server_rx) = client(port, "lockerfleet-server", "server-pw").await;
    server.subscribe("lf/v1/cab/+/up", QoS::AtLeastOnce).await.unwrap();
    let (a, mut a_rx) = client(port, "cab-a", "a-pw").await;
    let (b, mut b_rx) = client(port, "cab-b", "b-pw").await;
    // A tries to read B's down topic (and everyone's); B reads its own.
    a.subscribe("lf/v1/cab/cab-b/down", QoS::AtLeastOnce).await.unwrap();
    a.subscribe("lf/v1/cab/+/down", QoS::AtLeastOnce).await.unwrap();
    a.subscribe("lf/v1/cab/cab-a/down", QoS::AtLeastOnce).await.unwrap();
    b.subscribe("lf/v1/cab/cab-b/down", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // subscriptions settle (no ack event for a refused one)

    // The server sends B a template set: B gets it, A does not.
    server.publish("lf/v1/cab/cab-b/down", QoS::AtLeastOnce, false, b"for b only".to_vec()).await.unwrap();
    server.publish("lf/v1/cab/cab-a/down", QoS::AtLeastOnce, false, b"for a".to_vec()).await.unwrap();
    let b_seen = received_until(&mut b_rx, "lf/v1/cab/cab-b/down", Duration::from_secs(5)).await;
    assert_eq!(topics(&b_seen), ["lf/v1/cab/cab-b/down"]);
    assert_eq!(b_seen[0].1, b"for b only");
    // A: its own message arrives (published after B's), and nothing else, ever.
    let mut a_seen = received_until(&mut a_rx, "lf/v1/cab/cab-a/down", Duration::from_secs(5)).await;
    a_seen.extend(received_until(&mut a_rx, "never", Duration::from_millis(500)).await);
    assert_eq!(topics(&a_seen), ["lf/v1/cab/cab-a/down"], "A read another cabinet's topic");

    // A publishes as B: the server never sees it; A's own up arrives.
    a.publish("lf/v1/cab/cab-b/up", QoS::AtLeastOnce, false, b"forged".to_vec()).await.unwrap();
    a.publish("lf/v1/cab/cab-a/up", QoS::AtLeastOnce, false, b"genuine".to_vec()).await.unwrap();
    let mut server_seen = received_until(&mut server_rx, "lf/v1/cab/cab-a/up", Duration::from_secs(5)).await;
    server_seen.extend(received_until(&mut server_rx, "never", Duration::from_millis(500)).await);
    assert_eq!(topics(&server_seen), ["lf/v1/cab/cab-a/up"], "A published as B");
    assert_eq!(server_seen[0].1, b"genuine");

    // A wrong password is refused outright.
    let mut opts = MqttOptions::new("intruder", "127.0.0.1", port);
    opts.set_credentials("cab-a", "guess");
    let (_c, mut ev) = AsyncClient::new(opts, 4);
    let refused = loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => break ack.code != rumqttc::ConnectReturnCode::Success,
            Ok(_) => {}
            Err(_) => break true,
        }
    };
    assert!(refused, "a wrong password connected");
}

/// `/readyz` once it says what is expected (ready, or not ready for want of the MQTT
/// link), or as it last answered after 5 s.
async fn readiness(http: std::net::SocketAddr, ready: bool) -> (u16, serde_json::Value) {
    let url = format!("http://{http}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (mut status, mut last) = (0, serde_json::Value::Null);
    while tokio::time::Instant::now() < deadline {
        let mut res = awc::Client::default().get(&url).send().await.unwrap();
        status = res.status().as_u16();
        last = res.json().await.unwrap_or_default();
        if (status == 200) == ready && (ready || last["checks"]["mqtt_link"] == false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (status, last)
}

/// The fleet-server logs in to such a broker with `mqtt.username`/`password`; with a
/// wrong password it says it is not ready, naming the MQTT link.
#[actix_rt::test]
async fn the_server_logs_in_to_a_confining_broker() {
    let (_broker, port, dir) = acl_broker(&[("lockerfleet-server", "server-pw")]);
    for (password, ready) in [("server-pw", true), ("wrong", false)] {
        let mut c = fleet_server::config::Config::default();
        c.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        c.database.url = format!("sqlite://{}?mode=rwc", dir.path().join(format!("{ready}.db")).display());
        c.mqtt.mode = fleet_server::config::BrokerMode::External;
        c.mqtt.url = Some(format!("mqtt://127.0.0.1:{port}"));
        c.mqtt.username = Some("lockerfleet-server".into());
        c.mqtt.password = Some(password.into());
        c.mqtt.probe_interval_s = 1;
        c.auth.bootstrap_token = Some("lf_acl-test-admin-token-0123456789".into());
        let server = fleet_server::start(c).await.unwrap();
        let (status, last) = readiness(server.http_addr, ready).await;
        assert_eq!(status == 200, ready, "password {password}: {last}");
        if !ready {
            assert_eq!(last["checks"]["mqtt_link"], false, "{last}");
        }
        server.stop().await;
    }
}

/// The logins the fleet-server issues at registration work on Mosquitto too: exported
/// with `fleet-server mqtt-passwd` into its password file, each logs in as its cabinet and
/// only with its own secret, and is confined by the shipped ACL.
#[actix_rt::test]
async fn issued_logins_exported_for_mosquitto_log_in_and_stay_confined() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fleet_server::config::Config::default();
    c.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c.mqtt.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
    c.auth.bootstrap_token = Some("lf_acl-test-admin-token-0123456789".into());
    let server = fleet_server::start(c).await.unwrap();
    let http = awc::Client::default();
    let api = |path: &str| format!("http://{}/api/v1/{path}", server.http_addr);
    let post = |path: String, body: serde_json::Value| {
        let req = http.post(path).bearer_auth("lf_acl-test-admin-token-0123456789");
        async move {
            let mut res = req.send_json(&body).await.unwrap();
            assert!(res.status().is_success(), "{}", res.status());
            res.json::<serde_json::Value>().await.unwrap()
        }
    };
    post(api("tenants"), serde_json::json!({"id": "acme", "name": "Acme"})).await;
    let mut passwords = Vec::new();
    for id in ["cab-a", "cab-b"] {
        let key = lockerfleet_shared::seal::CabinetKeyPair::generate().public().to_base64();
        let body = serde_json::json!({"id": id, "tenant": "acme", "public_key": key, "compartments": [{"id": "A1", "size": "s"}]});
        let registered = post(api("cabinets"), body).await;
        passwords.push(registered["mqtt_credentials"]["password"].as_str().unwrap().to_owned());
    }
    let mut couriers = Vec::new();
    for id in ["k-1", "k-2"] {
        post(api("couriers"), serde_json::json!({"id": id, "tenant": "acme", "name": id})).await;
        let issued = post(api(&format!("couriers/{id}/mqtt-credentials")), serde_json::json!({})).await;
        couriers
            .push((issued["username"].as_str().unwrap().to_owned(), issued["password"].as_str().unwrap().to_owned()));
    }
    let exported = fleet_server::gateway::credentials::mosquitto_password_file(&server.store).await.unwrap();
    assert_eq!(exported.lines().count(), 4, "{exported}");
    assert!(!exported.contains(&passwords[0]), "the export holds hashes only");
    let courier_acl = fleet_server::gateway::credentials::mosquitto_courier_acl(
        &server.store,
        &lockerfleet_shared::TopicSpace::new(None).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(courier_acl.matches("user courier@").count(), 2, "{courier_acl}");
    server.stop().await;

    let (_broker, port, _mdir) = acl_broker_with(&[("lockerfleet-server", "server-pw")], &exported, &courier_acl, None);
    let (fleet, mut fleet_rx) = client(port, "lockerfleet-server", "server-pw").await;
    fleet.subscribe("lf/v1/cab/+/up", QoS::AtLeastOnce).await.unwrap();
    // The server's subscription is in place once its own marker comes back.
    fleet.publish("lf/v1/cab/marker/up", QoS::AtLeastOnce, false, b"marker".to_vec()).await.unwrap();
    assert_eq!(
        topics(&received_until(&mut fleet_rx, "lf/v1/cab/marker/up", Duration::from_secs(5)).await),
        ["lf/v1/cab/marker/up"]
    );
    let (a, _a_rx) = client(port, "cab-a", &passwords[0]).await;
    a.publish("lf/v1/cab/cab-b/up", QoS::AtLeastOnce, false, b"forged".to_vec()).await.unwrap();
    a.publish("lf/v1/cab/cab-a/up", QoS::AtLeastOnce, false, b"genuine".to_vec()).await.unwrap();
    let mut seen = received_until(&mut fleet_rx, "lf/v1/cab/cab-a/up", Duration::from_secs(5)).await;
    seen.extend(received_until(&mut fleet_rx, "never", Duration::from_millis(500)).await);
    assert_eq!(topics(&seen), ["lf/v1/cab/cab-a/up"], "the issued login published as another cabinet");

    // cab-b's secret does not log in as cab-a.
    let mut opts = MqttOptions::new("cab-a-2", "127.0.0.1", port);
    opts.set_credentials("cab-a", passwords[1].as_str());
    let (_c, mut ev) = AsyncClient::new(opts, 4);
    let refused = loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => break ack.code != rumqttc::ConnectReturnCode::Success,
            Ok(_) => {}
            Err(_) => break true,
        }
    };
    assert!(refused, "another cabinet's secret logged in");

    // A courier reads its own assignments only.
    let (k1, mut k1_rx) = client(port, &couriers[0].0, &couriers[0].1).await;
    for t in ["lf/v1/courier/k-1/assignments", "lf/v1/courier/k-2/assignments"] {
        k1.subscribe(t, QoS::AtLeastOnce).await.unwrap();
    }
    // Published after the subscriptions are in place: the server's marker comes back first.
    fleet.subscribe("lf/v1/courier/+/assignments", QoS::AtLeastOnce).await.unwrap();
    fleet.publish("lf/v1/courier/k-9/assignments", QoS::AtLeastOnce, false, b"marker".to_vec()).await.unwrap();
    received_until(&mut fleet_rx, "lf/v1/courier/k-9/assignments", Duration::from_secs(5)).await;
    fleet.publish("lf/v1/courier/k-2/assignments", QoS::AtLeastOnce, false, b"for k-2".to_vec()).await.unwrap();
    fleet.publish("lf/v1/courier/k-1/assignments", QoS::AtLeastOnce, false, b"for k-1".to_vec()).await.unwrap();
    let mut seen = received_until(&mut k1_rx, "lf/v1/courier/k-1/assignments", Duration::from_secs(5)).await;
    seen.extend(received_until(&mut k1_rx, "never", Duration::from_millis(500)).await);
    assert_eq!(topics(&seen), ["lf/v1/courier/k-1/assignments"], "a courier read another's assignments");
    // And it may not publish there (Mosquitto drops it silently; the server hears nothing).
    k1.publish("lf/v1/courier/k-1/assignments", QoS::AtLeastOnce, false, b"forged".to_vec()).await.unwrap();
    let forged = received_until(&mut fleet_rx, "never", Duration::from_millis(500)).await;
    assert!(forged.iter().all(|(_, p)| p != b"forged"), "a courier published on its assignment topic");
}

/// Over `mqtts://`, the server trusts only `mqtt.ca_file`: with the broker's CA it is ready,
/// with another CA its link never comes up.
#[actix_rt::test]
async fn the_server_logs_in_to_an_external_broker_over_tls() {
    let pki = common::TestPki::generate();
    let (_broker, port, dir) = acl_broker_with(&[("lockerfleet-server", "server-pw")], "", "", Some(&pki));
    let stranger = common::TestPki::generate();
    for (ca, ready) in [(&pki.ca_file, true), (&stranger.ca_file, false)] {
        let mut c = fleet_server::config::Config::default();
        c.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        c.database.url = format!("sqlite://{}?mode=rwc", dir.path().join(format!("tls-{ready}.db")).display());
        c.mqtt.mode = fleet_server::config::BrokerMode::External;
        c.mqtt.url = Some(format!("mqtts://127.0.0.1:{port}"));
        c.mqtt.ca_file = Some(ca.clone());
        c.mqtt.username = Some("lockerfleet-server".into());
        c.mqtt.password = Some("server-pw".into());
        c.mqtt.probe_interval_s = 1;
        c.auth.bootstrap_token = Some("lf_acl-test-admin-token-0123456789".into());
        let server = fleet_server::start(c).await.unwrap();
        let (status, last) = readiness(server.http_addr, ready).await;
        assert_eq!(status == 200, ready, "CA {}: {last}", ca.display());
        if !ready {
            assert_eq!(last["checks"]["mqtt_link"], false, "{last}");
        }
        server.stop().await;
    }
}
