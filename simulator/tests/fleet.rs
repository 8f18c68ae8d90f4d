//! The simulator's fleet mode against a real fleet-server (embedded rumqttd, SQLite):
//! every virtual cabinet connects, every parcel goes in and out, and every event the
//! cabinets made is acked and stored exactly once.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;

const TOKEN: &str = "lf_simulator-test-admin-token-000000";

#[actix_rt::test]
async fn a_simulated_fleet_connects_and_every_parcel_goes_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fleet_server::config::Config::default();
    c.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.mqtt.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
    c.auth.bootstrap_token = Some(TOKEN.into());
    let server = fleet_server::start(c).await.unwrap();
    let args = simulator::fleet::FleetArgs {
        server: format!("http://{}", server.http_addr),
        token: TOKEN.into(),
        mqtt_host: server.mqtt_host.clone(),
        mqtt_port: server.mqtt_port,
        cabinets: 30,
        prefix: "simt".into(),
        parcels: 2,
        data: dir.path().join("cabinets"),
        report: None,
        timeout_s: 120,
    };
    let report = simulator::fleet::run(&args).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.cabinets, report.connected), (30, 30));
    assert_eq!(report.parcels_picked_up, 60);
    assert_eq!(report.events_made, 120, "a deposit and a pickup per parcel");
    assert_eq!(report.events_acked, 120);
    assert_eq!((report.events_lost, report.events_duplicated), (0, 0));
    assert_eq!(report.assignment_to_cabinet.count, 60);
    assert!(report.code_to_cabinet.max_ms >= report.code_to_cabinet.p50_ms);
    // The server agrees: every parcel picked up.
    let (_, page) = {
        let mut res = awc::Client::default()
            .get(format!("http://{}/api/v1/parcels?tenant=simt&state=picked_up&limit=500", server.http_addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (res.status(), res.json::<serde_json::Value>().limit(1 << 22).await.unwrap())
    };
    assert_eq!(page["items"].as_array().unwrap().len(), 60, "{page}");
    server.stop().await;
}
