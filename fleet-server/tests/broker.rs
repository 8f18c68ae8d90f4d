//! The broker readiness probe: it must tell a broker that accepts connections from one
//! that does not (the failure mode of rumqttd issue #1062), and the embedded broker must
//! start on the address it was given.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use fleet_server::broker::{BrokerError, ProbeError, probe, start_embedded};
use fleet_server::config::MqttConfig;

#[actix_rt::test]
async fn the_probe_accepts_a_working_embedded_broker() {
    let cfg = MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..MqttConfig::default() };
    let broker = start_embedded(&cfg).unwrap();
    assert_ne!(broker.addr.port(), 0);
    probe("127.0.0.1", broker.addr.port(), Duration::from_secs(3), None).await.unwrap();
}

#[actix_rt::test]
async fn the_probe_reports_a_closed_port() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = probe("127.0.0.1", port, Duration::from_secs(3), None).await.unwrap_err();
    assert!(matches!(err, ProbeError::Connection(_)), "{err}");
}

#[actix_rt::test]
async fn the_probe_reports_a_broker_that_accepts_tcp_but_never_answers() {
    // A listener that takes the TCP connection and never sends CONNACK, as a wedged
    // broker does.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = probe("127.0.0.1", port, Duration::from_millis(500), None).await.unwrap_err();
    assert!(matches!(err, ProbeError::Timeout(_)), "{err}");
    drop(listener);
}

#[test]
fn an_embedded_broker_on_a_busy_port_names_the_port() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let cfg = MqttConfig { listen: addr, ..MqttConfig::default() };
    let err = start_embedded(&cfg).unwrap_err();
    assert!(matches!(err, BrokerError::Listen { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()) && msg.contains("mqtt.listen"), "{msg}");
}

#[actix_rt::test]
async fn the_embedded_router_is_woken_on_every_tick_even_with_nothing_to_do() {
    // rumqttd's router may block with connections still queued (see `broker.rs`); the
    // ticker's publishes bound that sleep. With no other client doing anything, a
    // subscriber to the tick topic must see them keep coming.
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let cfg = MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..MqttConfig::default() };
    let broker = start_embedded(&cfg).unwrap();
    let (client, mut events) = AsyncClient::new(MqttOptions::new("tick-watch", "127.0.0.1", broker.addr.port()), 16);
    client.subscribe(fleet_server::broker::TICK_TOPIC, QoS::AtMostOnce).await.unwrap();
    let ticks = async {
        let mut seen = 0;
        while seen < 10 {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                assert_eq!(p.topic, fleet_server::broker::TICK_TOPIC);
                assert!(p.payload.is_empty(), "a tick carries nothing");
                seen += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ticks).await.expect("ten ticks within 10 s (one every 25 ms)");
}
