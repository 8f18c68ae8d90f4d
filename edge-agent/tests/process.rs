//! The real `edge-agent` binary against a real fleet-server: provisioned from the
//! command line, driven through its simulated hardware endpoint, and killed with
//! SIGKILL in the middle of a pickup. After the restart every event reaches the server
//! exactly once and no door opens twice for the pickup.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleet_server::config::{BrokerMode, Config};
use serde_json::{Value, json};

const TOKEN: &str = "lf_edge-process-admin-token-012345";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn call(http: &awc::Client, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let req = match method {
        "GET" => http.get(url),
        _ => http.post(url),
    }
    .bearer_auth(TOKEN);
    let res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    match res {
        Ok(mut res) => {
            let bytes = res.body().await.unwrap_or_default();
            (res.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn agent(config: &std::path::Path, arg: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    c.arg("--config").arg(config).arg(arg).env("RUST_LOG", "warn");
    c
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_rt::test]
async fn a_pickup_survives_kill_9_of_the_agent() {
    let broker_cfg =
        fleet_server::config::MqttConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Default::default() };
    let broker = fleet_server::broker::start_embedded(&broker_cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    c.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("fleet.db").display());
    c.mqtt.mode = BrokerMode::External;
    c.mqtt.url = Some(format!("mqtt://127.0.0.1:{}", broker.addr.port()));
    c.auth.bootstrap_token = Some(TOKEN.into());
    let server = fleet_server::start(c).await.unwrap();
    let api = format!("http://{}/api/v1", server.http_addr);
    let http = awc::Client::default();

    // The cabinet's configuration file, as a field engineer writes it.
    let agent_port = free_port();
    let config = dir.path().join("cabinet.toml");
    std::fs::write(
        &config,
        format!(
            "cabinet = \"cab-p1\"\ndata_dir = \"{}\"\nheartbeat_s = 1\nresend_s = 1\nsim_control = true\n\
             http_listen = \"127.0.0.1:{agent_port}\"\n[mqtt]\nport = {}\n\
             [[compartments]]\nid = \"A1\"\nsize = \"m\"\n",
            dir.path().join("cabinet").display(),
            broker.addr.port()
        ),
    )
    .unwrap();
    let out = agent(&config, "provision").stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut registration: Value = serde_json::from_slice(&out.stdout).unwrap();
    registration["tenant"] = json!("acme");
    call(&http, "POST", &format!("{api}/tenants"), Some(json!({"id": "acme", "name": "Acme"}))).await;
    let (status, body) = call(&http, "POST", &format!("{api}/cabinets"), Some(registration)).await;
    assert_eq!(status, 201, "{body}");
    call(&http, "POST", &format!("{api}/couriers"), Some(json!({"id": "k-1", "tenant": "acme", "name": "Kim"}))).await;

    let base = format!("http://127.0.0.1:{agent_port}");
    let sim = format!("{base}/sim");
    let mut run = Killed(agent(&config, "run").spawn().unwrap());
    until("the agent answers", || async { call(&http, "GET", &format!("{base}/healthz"), None).await.0 == 200 }).await;

    let (_, created) = call(
        &http,
        "POST",
        &format!("{api}/parcels"),
        Some(json!({"tenant": "acme", "reference": "P1", "courier": "k-1", "size": "s", "cabinet": "cab-p1"})),
    )
    .await;
    let parcel = created["id"].as_str().unwrap().to_owned();
    let code = created["pickup_code"].as_str().unwrap().to_owned();
    let (_, pass) = call(&http, "POST", &format!("{api}/couriers/k-1/pass"), None).await;
    let deposit = json!({"pass": pass["pass"], "parcel": parcel});
    until("the courier can deposit", || async {
        call(&http, "POST", &format!("{sim}/courier/deposit"), Some(deposit.clone())).await.0 == 200
    })
    .await;
    for open in [true, false] {
        call(&http, "POST", &format!("{sim}/door"), Some(json!({"compartment": "A1", "open": open}))).await;
    }
    until("the code works at the cabinet", || async {
        let (_, s) = call(&http, "GET", &format!("{base}/status"), None).await;
        s["ready"].as_array().is_some_and(|r| r.iter().any(|p| p == &json!(parcel)))
    })
    .await;

    // The recipient types the code and opens the door...
    let (_, accepted) = call(&http, "POST", &format!("{sim}/keypad"), Some(json!({"code": code}))).await;
    assert_eq!(accepted["outcome"], "accepted", "{accepted}");
    call(&http, "POST", &format!("{sim}/door"), Some(json!({"compartment": "A1", "open": true}))).await;
    // ...and the agent dies with the door open.
    run.0.kill().unwrap();
    run.0.wait().unwrap();

    let _run = Killed(agent(&config, "run").spawn().unwrap());
    until("the agent is back", || async { call(&http, "GET", &format!("{base}/healthz"), None).await.0 == 200 }).await;
    // The same code does not open the door a second time.
    let (_, again) = call(&http, "POST", &format!("{sim}/keypad"), Some(json!({"code": code}))).await;
    assert_eq!(again["outcome"], "rejected", "{again}");
    // The recipient shuts the door: the pickup interrupted by the crash completes.
    call(&http, "POST", &format!("{sim}/door"), Some(json!({"compartment": "A1", "open": false}))).await;
    until("the server has the pickup", || async {
        call(&http, "GET", &format!("{api}/parcels/{parcel}"), None).await.1["state"] == "picked_up"
    })
    .await;
    until("the journal is empty", || async {
        call(&http, "GET", &format!("{base}/status"), None).await.1["journal_depth"] == 0
    })
    .await;
    let (_, timeline) = call(&http, "GET", &format!("{api}/parcels/{parcel}/events"), None).await;
    let kinds: Vec<&str> = timeline["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "assign", "deposit", "ready", "pickup"], "each fact once");
    // deposit, pickup and the rejected reuse of the code: three events, each stored once.
    assert_eq!(server.store.count_cabinet_events().await.unwrap(), 3);
    let (_, metrics) =
        (0, awc::Client::default().get(format!("{base}/metrics")).send().await.unwrap().body().await.unwrap());
    assert!(String::from_utf8_lossy(&metrics).contains("lockerfleet_edge_journal_depth 0"));
    server.stop().await;
}
