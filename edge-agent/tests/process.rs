//! The end-to-end check with real processes: the `fleet-server` binary on its
//! embedded default (rumqttd inside it, SQLite) and the `edge-agent` binary with simulated
//! hardware, driven only through their HTTP endpoints. The broker is "stopped" by stopping
//! the server process it lives in; the agent is killed with SIGKILL mid-pickup.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use lockerfleet_shared::sdk::{ReadyNotice, seal_for_parcel};
use lockerfleet_shared::seal::{CabinetPublicKey, FaceTemplate, ModelRef};
use lockerfleet_shared::{CabinetId, ParcelId};
use serde_json::{Value, json};

const TOKEN: &str = "lf_edge-process-admin-token-012345";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `fleet-server` binary of this build. `cargo test --workspace` (the README's test
/// command) builds it beside the edge-agent binary before any test runs.
fn fleet_server_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_edge-agent")).with_file_name("fleet-server");
    assert!(
        bin.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`) or `cargo build -p fleet-server` first",
        bin.display()
    );
    bin
}

async fn call(http: &awc::Client, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let req = match method {
        "GET" => http.get(url),
        "PUT" => http.put(url),
        "PATCH" => http.patch(url),
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

/// A child process killed when the test ends, however it ends.
struct Proc(Child);

impl Proc {
    fn kill_9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    fn terminate(&mut self) {
        let status = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status().unwrap();
        assert!(status.success());
        let exit = self.0.wait().unwrap();
        assert!(exit.success(), "the process did not stop cleanly: {exit}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One fleet-server process on its embedded default, in `dir`.
struct Server {
    config: PathBuf,
    api: String,
    base: String,
    mqtt_port: u16,
}

impl Server {
    fn new(dir: &Path) -> Self {
        Self::with(dir, "")
    }

    /// A server whose configuration file ends with `extra` (TOML sections).
    fn with(dir: &Path, extra: &str) -> Self {
        let (http_port, mqtt_port) = (free_port(), free_port());
        let config = dir.join("fleet-server.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
                 [mqtt]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{mqtt_port}\"\n\
                 [database]\nurl = \"sqlite://{}?mode=rwc\"\n\
                 [auth]\nbootstrap_token = \"{TOKEN}\"\ntoken_file = \"{}\"\n{extra}",
                dir.join("fleet.db").display(),
                dir.join("admin.token").display(),
            ),
        )
        .unwrap();
        let base = format!("http://127.0.0.1:{http_port}");
        Self { config, api: format!("{base}/api/v1"), base, mqtt_port }
    }

    async fn start(&self, http: &awc::Client) -> Proc {
        let child = Command::new(fleet_server_binary())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let proc = Proc(child);
        until("the fleet-server is ready", || async {
            call(http, "GET", &format!("{}/readyz", self.base), None).await.0 == 200
        })
        .await;
        proc
    }
}

/// One cabinet: its configuration file and local endpoint.
struct Agent {
    config: PathBuf,
    base: String,
}

impl Agent {
    fn new(dir: &Path, cabinet: &str, mqtt_port: u16, compartments: &[(&str, &str)]) -> Self {
        Self::with(dir, cabinet, mqtt_port, compartments, "")
    }

    fn with(dir: &Path, cabinet: &str, mqtt_port: u16, compartments: &[(&str, &str)], extra: &str) -> Self {
        let port = free_port();
        let config = dir.join(format!("{cabinet}.toml"));
        let mut text = format!(
            "cabinet = \"{cabinet}\"\ndata_dir = \"{}\"\nheartbeat_s = 1\nresend_s = 1\nsim_control = true\n\
             door_left_open_s = 1\nhttp_listen = \"127.0.0.1:{port}\"\n[mqtt]\nport = {mqtt_port}\n",
            dir.join(cabinet).display(),
        );
        for (id, size) in compartments {
            text.push_str(&format!("[[compartments]]\nid = \"{id}\"\nsize = \"{size}\"\n"));
        }
        text.push_str(extra);
        std::fs::write(&config, text).unwrap();
        Self { config, base: format!("http://127.0.0.1:{port}") }
    }

    fn command(&self, arg: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
        c.arg("--config").arg(&self.config).arg(arg).env("RUST_LOG", "warn").stdin(Stdio::null());
        c
    }

    /// `edge-agent provision`: the registration payload it prints.
    fn provision(&self) -> Value {
        let out = self.command("provision").stdout(Stdio::piped()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    async fn run(&self, http: &awc::Client) -> Proc {
        let proc = Proc(self.command("run").spawn().unwrap());
        until("the agent answers", || async {
            call(http, "GET", &format!("{}/healthz", self.base), None).await.0 == 200
        })
        .await;
        proc
    }

    async fn status(&self, http: &awc::Client) -> Value {
        call(http, "GET", &format!("{}/status", self.base), None).await.1
    }

    async fn sim(&self, http: &awc::Client, what: &str, body: Value) -> (u16, Value) {
        call(http, "POST", &format!("{}/sim/{what}", self.base), Some(body)).await
    }

    async fn door(&self, http: &awc::Client, compartment: &str, open: bool) {
        let (status, body) = self.sim(http, "door", json!({"compartment": compartment, "open": open})).await;
        assert_eq!(status, 204, "{body}");
    }

    async fn until_ready(&self, http: &awc::Client, parcel: &str) {
        until("the code works at the cabinet", || async {
            self.status(http).await["ready"].as_array().is_some_and(|r| r.iter().any(|p| p == parcel))
        })
        .await;
    }
}

/// Registers the provisioned cabinet, a tenant and two couriers.
async fn world(http: &awc::Client, server: &Server, agent: &Agent, cabinet: &str) {
    let mut registration = agent.provision();
    registration["tenant"] = json!("acme");
    let (s, b) =
        call(http, "POST", &format!("{}/tenants", server.api), Some(json!({"id": "acme", "name": "Acme"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(http, "POST", &format!("{}/cabinets", server.api), Some(registration)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["id"], cabinet);
    for (id, name) in [("k-1", "Kim"), ("k-2", "Lee")] {
        let body = json!({"id": id, "tenant": "acme", "name": name});
        assert_eq!(call(http, "POST", &format!("{}/couriers", server.api), Some(body)).await.0, 201);
    }
}

async fn new_parcel(http: &awc::Client, server: &Server, body: Value) -> (String, String) {
    let (s, created) = call(http, "POST", &format!("{}/parcels", server.api), Some(body)).await;
    assert_eq!(s, 201, "{created}");
    (created["id"].as_str().unwrap().to_owned(), created["pickup_code"].as_str().unwrap().to_owned())
}

async fn pass(http: &awc::Client, server: &Server, courier: &str) -> String {
    let (s, p) = call(http, "POST", &format!("{}/couriers/{courier}/pass", server.api), None).await;
    assert_eq!(s, 200, "{p}");
    p["pass"].as_str().unwrap().to_owned()
}

async fn parcel_state(http: &awc::Client, server: &Server, parcel: &str) -> String {
    call(http, "GET", &format!("{}/parcels/{parcel}", server.api), None).await.1["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn cabinet_events(http: &awc::Client, server: &Server, cabinet: &str) -> Vec<Value> {
    let (s, b) = call(http, "GET", &format!("{}/cabinets/{cabinet}/events?limit=500", server.api), None).await;
    assert_eq!(s, 200, "{b}");
    b.as_array().unwrap().clone()
}

fn alarms(events: &[Value], code: &str) -> usize {
    events.iter().filter(|e| e["kind"] == "alarm" && e["detail"]["code"] == code).count()
}

fn kinds(timeline: &Value) -> Vec<String> {
    timeline["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

#[actix_rt::test]
async fn the_cabinet_works_end_to_end_with_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let server = Server::new(dir.path());
    let mut server_proc = server.start(&http).await;
    let agent = Agent::new(dir.path(), "cab-e1", server.mqtt_port, &[("A1", "s"), ("A2", "m"), ("B1", "l")]);
    world(&http, &server, &agent, "cab-e1").await;
    let (s, b) =
        call(&http, "PATCH", &format!("{}/tenants/acme", server.api), Some(json!({"custody": "recipient"}))).await;
    assert_eq!(s, 200, "{b}");
    let _agent_proc = agent.run(&http).await;

    // The operator tightens the keypad policy remotely; the cabinet applies it by version.
    let settings = json!({"max_failed_attempts": 3, "lockout_s": 600});
    let (s, b) = call(&http, "PUT", &format!("{}/cabinets/cab-e1/settings", server.api), Some(settings)).await;
    assert_eq!(s, 200, "{b}");
    until("the cabinet applies the settings", || async {
        agent.status(&http).await["settings"]["max_failed_attempts"] == 3
    })
    .await;
    let bad = json!({"unlock_window_s": 100_000});
    let (s, b) = call(&http, "PUT", &format!("{}/cabinets/cab-e1/settings", server.api), Some(bad)).await;
    assert_eq!(s, 422, "{b}");
    assert!(b.to_string().contains("unlock_window_s"), "{b}");

    // Two parcels, one per courier; the small one's recipient will carry a template.
    let (p1, code1) = new_parcel(
        &http,
        &server,
        json!({"tenant": "acme", "reference": "P1", "courier": "k-1", "size": "s", "cabinet": "cab-e1"}),
    )
    .await;
    let (p2, code2) = new_parcel(
        &http,
        &server,
        json!({"tenant": "acme", "reference": "P2", "courier": "k-2", "size": "m", "cabinet": "cab-e1"}),
    )
    .await;
    let (kim, lee) = (pass(&http, &server, "k-1").await, pass(&http, &server, "k-2").await);

    // Each courier sees only their own compartments and opens only those.
    until("the cabinet expects both parcels", || async {
        let (_, k) = agent.sim(&http, "courier/tasks", json!({"pass": kim})).await;
        let (_, l) = agent.sim(&http, "courier/tasks", json!({"pass": lee})).await;
        k["tasks"].as_array().is_some_and(|t| t.len() == 1) && l["tasks"].as_array().is_some_and(|t| t.len() == 1)
    })
    .await;
    let (_, kims) = agent.sim(&http, "courier/tasks", json!({"pass": kim})).await;
    let (_, lees) = agent.sim(&http, "courier/tasks", json!({"pass": lee})).await;
    assert_eq!(kims["tasks"][0]["parcel"], json!(p1), "{kims}");
    assert_eq!(lees["tasks"].as_array().unwrap().len(), 1, "{lees}");
    assert_eq!(lees["tasks"][0]["parcel"], json!(p2), "{lees}");
    let (s, _) = agent.sim(&http, "courier/deposit", json!({"pass": lee, "parcel": p1})).await;
    assert_eq!(s, 409, "Lee must not open Kim's compartment");
    let (s, _) = agent.sim(&http, "courier/tasks", json!({"pass": "forged"})).await;
    assert_eq!(s, 403);
    assert!(agent.status(&http).await["open_doors"].as_array().unwrap().is_empty(), "no door opened");

    // Kim deposits and holds the door open past door_left_open_s: the alarm reaches the server.
    let (s, opened) = agent.sim(&http, "courier/deposit", json!({"pass": kim, "parcel": p1})).await;
    assert_eq!(s, 200, "{opened}");
    let c1 = opened["compartment"].as_str().unwrap().to_owned();
    agent.door(&http, &c1, true).await;
    until("the left-open alarm is at the server", || async {
        alarms(&cabinet_events(&http, &server, "cab-e1").await, "door_left_open") >= 1
    })
    .await;
    agent.door(&http, &c1, false).await;
    let (s, opened) = agent.sim(&http, "courier/deposit", json!({"pass": lee, "parcel": p2})).await;
    assert_eq!(s, 200, "{opened}");
    let c2 = opened["compartment"].as_str().unwrap().to_owned();
    assert_ne!(c1, c2);
    agent.door(&http, &c2, true).await;
    agent.door(&http, &c2, false).await;
    agent.until_ready(&http, &p1).await;
    agent.until_ready(&http, &p2).await;

    // P1's recipient seals a template for this cabinet; the cabinet receives it.
    let (_, notice) = call(&http, "GET", &format!("{}/parcels/{p1}/ready-notice", server.api), None).await;
    let notice = ReadyNotice {
        parcel: ParcelId(p1.parse().unwrap()),
        cabinet: CabinetId::new(notice["cabinet"].as_str().unwrap()).unwrap(),
        cabinet_public_key: CabinetPublicKey::from_base64(notice["cabinet_public_key"].as_str().unwrap()).unwrap(),
        deadline: notice["deadline"].as_str().unwrap().parse().unwrap(),
    };
    let face = FaceTemplate::new((0..512).map(|i| (i as f32 * 0.1).sin()).collect());
    let model = ModelRef { id: "fr_feature".into(), sha256: "ab".repeat(32) };
    let sealed = seal_for_parcel(&notice, &face, &model, Utc::now()).unwrap();
    let (s, b) =
        call(&http, "POST", &format!("{}/parcels/{p1}/sealed-template", server.api), Some(json!(sealed))).await;
    assert_eq!(s, 202, "{b}");
    until("the cabinet holds the template", || async { agent.status(&http).await["templates"] == 1 }).await;

    // A wrong code opens nothing; P2's code opens exactly P2's compartment.
    let (_, wrong) = agent.sim(&http, "keypad", json!({"code": "00000000"})).await;
    assert_eq!(wrong["outcome"], "rejected", "{wrong}");
    assert_eq!(wrong["remaining"], 2, "the remote policy allows 3 tries: {wrong}");
    assert!(agent.status(&http).await["open_doors"].as_array().unwrap().is_empty());
    let (_, ok) = agent.sim(&http, "keypad", json!({"code": code2})).await;
    assert_eq!(ok["outcome"], "accepted", "{ok}");
    assert_eq!(ok["compartment"], json!(c2));
    assert_eq!(agent.status(&http).await["open_doors"], json!([c2]), "only P2's door is released");
    agent.door(&http, &c2, true).await;
    agent.door(&http, &c2, false).await;
    until("the server has P2's pickup", || async { parcel_state(&http, &server, &p2).await == "picked_up" }).await;

    // The broker goes away (it lives in the server process): code pickup still works,
    // and its event waits in the journal.
    server_proc.terminate();
    let (_, ok) = agent.sim(&http, "keypad", json!({"code": code1})).await;
    assert_eq!(ok["outcome"], "accepted", "{ok}");
    assert_eq!(ok["compartment"], json!(c1));
    agent.door(&http, &c1, true).await;
    agent.door(&http, &c1, false).await;
    until("the pickup is journalled", || async { agent.status(&http).await["journal_depth"].as_u64() >= Some(1) })
        .await;

    // The broker returns: the journal drains, the pickup lands, the template is revoked.
    let _server_proc = server.start(&http).await;
    until("the server has P1's pickup", || async { parcel_state(&http, &server, &p1).await == "picked_up" }).await;
    until("the journal is empty and the template gone", || async {
        let s = agent.status(&http).await;
        s["journal_depth"] == 0 && s["templates"] == 0
    })
    .await;

    // Repeated wrong codes lock the keypad (3 tries, as set remotely) and raise an alarm.
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(agent.sim(&http, "keypad", json!({"code": "11111111"})).await.1["outcome"].clone());
    }
    assert_eq!(outcomes, [json!("rejected"), json!("rejected"), json!("locked_out"), json!("locked_out")]);
    until("the lockout alarm is at the server", || async {
        alarms(&cabinet_events(&http, &server, "cab-e1").await, "keypad_lockout") == 1
    })
    .await;

    // Every fact reached the server exactly once.
    for p in [&p1, &p2] {
        let (_, timeline) = call(&http, "GET", &format!("{}/parcels/{p}/events", server.api), None).await;
        assert_eq!(kinds(&timeline), ["created", "assign", "deposit", "ready", "pickup"], "{p}");
    }
    let events = cabinet_events(&http, &server, "cab-e1").await;
    let count = |k: &str| events.iter().filter(|e| e["kind"] == k).count();
    assert_eq!((count("deposit"), count("pickup"), count("failed_match")), (2, 2, 3), "{events:?}");
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "no event stored twice");
    let (_, metrics) = (0, http.get(format!("{}/metrics", server.base)).send().await.unwrap().body().await.unwrap());
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("lockerfleet_cabinet_alarms_total{code=\"keypad_lockout\"} 1"), "{metrics}");
}

#[actix_rt::test]
async fn a_pickup_survives_kill_9_of_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let server = Server::new(dir.path());
    let _server_proc = server.start(&http).await;
    let agent = Agent::new(dir.path(), "cab-p1", server.mqtt_port, &[("A1", "m")]);
    world(&http, &server, &agent, "cab-p1").await;
    let mut run = agent.run(&http).await;

    let (parcel, code) = new_parcel(
        &http,
        &server,
        json!({"tenant": "acme", "reference": "P1", "courier": "k-1", "size": "s", "cabinet": "cab-p1"}),
    )
    .await;
    let kim = pass(&http, &server, "k-1").await;
    let deposit = json!({"pass": kim, "parcel": parcel});
    until("the courier can deposit", || async { agent.sim(&http, "courier/deposit", deposit.clone()).await.0 == 200 })
        .await;
    agent.door(&http, "A1", true).await;
    agent.door(&http, "A1", false).await;
    agent.until_ready(&http, &parcel).await;

    // The recipient types the code and opens the door...
    let (_, accepted) = agent.sim(&http, "keypad", json!({"code": code})).await;
    assert_eq!(accepted["outcome"], "accepted", "{accepted}");
    agent.door(&http, "A1", true).await;
    // ...and the agent dies with the door open.
    run.kill_9();

    let _run = agent.run(&http).await;
    // The same code does not open the door a second time.
    let (_, again) = agent.sim(&http, "keypad", json!({"code": code})).await;
    assert_eq!(again["outcome"], "rejected", "{again}");
    // The recipient shuts the door: the pickup interrupted by the crash completes.
    agent.door(&http, "A1", false).await;
    until("the server has the pickup", || async { parcel_state(&http, &server, &parcel).await == "picked_up" }).await;
    until("the journal is empty", || async { agent.status(&http).await["journal_depth"] == 0 }).await;
    let (_, timeline) = call(&http, "GET", &format!("{}/parcels/{parcel}/events", server.api), None).await;
    assert_eq!(kinds(&timeline), ["created", "assign", "deposit", "ready", "pickup"], "each fact once");
    // The deposit, the refused reuse of the code and the pickup (recorded when the door
    // shut), each stored once, in the cabinet's order.
    let events = cabinet_events(&http, &server, "cab-p1").await;
    let stored: Vec<&str> = events.iter().rev().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(stored, ["deposit", "failed_match", "pickup"], "{events:?}");
    let metrics = http.get(format!("{}/metrics", agent.base)).send().await.unwrap().body().await.unwrap();
    assert!(String::from_utf8_lossy(&metrics).contains("lockerfleet_edge_journal_depth 0"));
}

/// Runs the agent as a service manager would: started again whenever it exits (as it
/// does to boot the other slot), until the test ends.
struct Service {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    child: std::sync::Arc<std::sync::Mutex<Option<Child>>>,
}

impl Service {
    fn start(agent: &Agent) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let child: std::sync::Arc<std::sync::Mutex<Option<Child>>> = std::sync::Arc::default();
        let config = agent.config.clone();
        let (s, c) = (stop.clone(), child.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let spawned = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
                    .arg("--config")
                    .arg(&config)
                    .arg("run")
                    .env("RUST_LOG", std::env::var("LF_AGENT_LOG").unwrap_or_else(|_| "warn".into()))
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap();
                *c.lock().unwrap() = Some(spawned);
                // Wait for this run to end, checking now and then whether to stop.
                loop {
                    if s.load(Ordering::SeqCst) {
                        return;
                    }
                    let done =
                        c.lock().unwrap().as_mut().map(|ch| ch.try_wait().ok().flatten().is_some()).unwrap_or(true);
                    if done {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Self { stop, child }
    }
}

impl Service {
    /// SIGKILL to the running agent, returning once it is dead (the loop starts it
    /// again, as systemd would).
    fn kill_9(&self) {
        if let Some(c) = self.child.lock().unwrap().as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `fleet-server artifact …` (off the test's runtime: the server answers on it).
async fn release_tool(args: Vec<String>) -> Value {
    let out = actix_rt::task::spawn_blocking(move || {
        Command::new(fleet_server_binary()).arg("artifact").args(&args).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

async fn publish(dir: &Path, server: &Server, key: &Path, version: &str, floor: &str, image: &[u8]) -> String {
    let file = dir.join(format!("image-{version}"));
    std::fs::write(&file, image).unwrap();
    let manifest = dir.join(format!("manifest-{version}.json"));
    let s = |p: &Path| p.display().to_string();
    let signed = release_tool(vec![
        "sign".into(),
        "--key".into(),
        s(key),
        "--file".into(),
        s(&file),
        "--version".into(),
        version.into(),
        "--hardware".into(),
        "lf-cab-sim".into(),
        "--security-floor".into(),
        floor.into(),
    ])
    .await;
    std::fs::write(&manifest, signed.to_string()).unwrap();
    let uploaded = release_tool(vec![
        "upload".into(),
        "--server".into(),
        server.base.clone(),
        "--token".into(),
        TOKEN.into(),
        "--manifest".into(),
        s(&manifest),
        "--file".into(),
        s(&file),
    ])
    .await;
    uploaded["id"].as_str().unwrap().to_owned()
}

async fn run_rollout(http: &awc::Client, server: &Server, name: &str, artifact: &str, end: &str) -> Value {
    let plan = json!({"waves": [{"count": 1}, {"percent": 100.0}], "soak_s": 0, "silence_after_s": 600,
                      "rate": {"per_minute": 600.0, "growth": 1.0, "max_per_minute": 600.0}});
    run_plan(http, server, name, artifact, end, plan).await
}

async fn run_plan(http: &awc::Client, server: &Server, name: &str, artifact: &str, end: &str, plan: Value) -> Value {
    let body = json!({"name": name, "artifact": artifact, "plan": plan});
    let (s, created) = call(http, "POST", &format!("{}/rollouts", server.api), Some(body)).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let url = format!("{}/rollouts/{id}", server.api);
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        last = call(http, "GET", &url, None).await.1;
        if last["progress"]["phase"]["phase"] == end {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("rollout {name} did not end {end}: {last}");
}

#[actix_rt::test]
async fn cabinets_update_through_a_rollout_and_refuse_or_roll_back_bad_releases() {
    let dir = tempfile::tempdir().unwrap();
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    // Two release keys: the server accepts both, the cabinets trust only the first.
    let (key, stranger) = (dir.path().join("release.key"), dir.path().join("stranger.key"));
    let trusted = release_tool(vec!["keygen".into(), "--out".into(), key.display().to_string()]).await;
    let other = release_tool(vec!["keygen".into(), "--out".into(), stranger.display().to_string()]).await;
    let (trusted, other) = (trusted["public_key"].as_str().unwrap(), other["public_key"].as_str().unwrap());
    let server = Server::with(
        dir.path(),
        &format!(
            "[artifacts]\ndir = \"{}\"\ntrusted_keys = [\"{trusted}\", \"{other}\"]\nconduct_interval_ms = 100\n",
            dir.path().join("artifacts").display()
        ),
    );
    let _server_proc = server.start(&http).await;
    let ota = format!("[ota]\ntrusted_keys = [\"{trusted}\"]\nfactory_floor = \"1.0.0\"\nhealth_deadline_s = 20\n");
    let mut services = Vec::new();
    let mut first = true;
    for name in ["cab-u1", "cab-u2", "cab-u3"] {
        let agent = Agent::with(dir.path(), name, server.mqtt_port, &[("A1", "m")], &ota);
        if first {
            world(&http, &server, &agent, name).await;
            first = false;
        } else {
            let mut reg = agent.provision();
            reg["tenant"] = json!("acme");
            assert_eq!(call(&http, "POST", &format!("{}/cabinets", server.api), Some(reg)).await.0, 201);
        }
        services.push(Service::start(&agent));
        until("the agent answers", || async {
            call(&http, "GET", &format!("{}/healthz", agent.base), None).await.0 == 200
        })
        .await;
    }
    let firmware = |id: &'static str| {
        let (http, api) = (http.clone(), server.api.clone());
        async move { call(&http, "GET", &format!("{api}/cabinets/{id}"), None).await.1["firmware"].clone() }
    };

    // A good release: every cabinet installs it, restarts into it and confirms.
    let good = publish(dir.path(), &server, &key, "1.1.0", "1.1.0", b"edge-agent 1.1.0 image").await;
    let done = run_rollout(&http, &server, "1.1.0", &good, "completed").await;
    assert_eq!(done["progress"]["waves"][1]["states"]["confirmed"], 2, "{done}");
    for id in ["cab-u1", "cab-u2", "cab-u3"] {
        until("the cabinet reports the new version", || async { firmware(id).await == "1.1.0" }).await;
    }

    // A release that fails its health check: the canary rolls back by itself, the
    // rollout stops, nobody else gets it.
    let image = [b"edge-agent 1.2.0 ".as_slice(), edge_agent::ota::SIM_FAIL_HEALTH].concat();
    let bad = publish(dir.path(), &server, &key, "1.2.0", "1.1.0", &image).await;
    let stopped = run_rollout(&http, &server, "1.2.0", &bad, "aborted").await;
    assert_eq!(stopped["progress"]["failures"]["rolled_back"], 1, "{stopped}");
    assert_eq!(stopped["progress"]["waves"][1]["states"]["cancelled"], 2, "{stopped}");
    for id in ["cab-u1", "cab-u2", "cab-u3"] {
        until("every cabinet runs 1.1.0", || async { firmware(id).await == "1.1.0" }).await;
    }

    // Signed by a key the cabinets do not trust, or older than their floor: refused.
    let foreign = publish(dir.path(), &server, &stranger, "1.3.0", "1.1.0", b"edge-agent 1.3.0").await;
    let refused = run_rollout(&http, &server, "1.3.0 foreign", &foreign, "aborted").await;
    assert_eq!(refused["progress"]["failures"]["rejected"], 1, "{refused}");
    // A release whose file was altered on the server after upload (same size, other
    // bytes): the cabinet's own hash check refuses it.
    let genuine = b"edge-agent 1.4.0 image".to_vec();
    let tampered_id = publish(dir.path(), &server, &key, "1.4.0", "1.1.0", &genuine).await;
    let sha = hex_sha256(&genuine);
    let mut altered = genuine.clone();
    altered[0] ^= 0x20;
    std::fs::write(dir.path().join("artifacts").join(&sha), &altered).unwrap();
    let refused = run_rollout(&http, &server, "1.4.0 tampered", &tampered_id, "aborted").await;
    assert_eq!(refused["progress"]["failures"]["rejected"], 1, "{refused}");
    let why = refused["progress"]["reasons"]["rejected"].as_object().unwrap();
    assert!(why.keys().any(|k| k.contains("sha256")), "{refused}");
    let old = publish(dir.path(), &server, &key, "1.0.5", "1.0.0", b"edge-agent 1.0.5").await;
    let refused = run_rollout(&http, &server, "1.0.5 downgrade", &old, "aborted").await;
    assert_eq!(refused["progress"]["failures"]["rejected"], 1, "{refused}");
    let why = refused["progress"]["reasons"]["rejected"].as_object().unwrap();
    assert!(why.keys().any(|k| k.contains("security floor")), "{refused}");
    for id in ["cab-u1", "cab-u2", "cab-u3"] {
        assert_eq!(firmware(id).await, "1.1.0");
    }
    drop(services);
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Power cuts at arbitrary moments of an update (download, verification, install, the
/// switch) and two of the new slot's trial boot: the cabinet always starts again on a
/// working slot, resumes or retries, and ends on the new version.
#[actix_rt::test]
async fn an_update_survives_kill_9_at_arbitrary_moments() {
    update_under_power_cuts(edge_agent::ota::MAX_UNCONFIRMED_BOOTS - 1).await;
}

/// Power cut in every trial boot up to the limit: the cabinet cannot tell that from a new
/// version that crashes, so it goes back to the old slot and says why; the rollout
/// pauses, and once the operator has aborted it a new rollout of the same release ends
/// confirmed.
#[actix_rt::test]
async fn power_cut_in_every_trial_boot_rolls_back_and_a_new_rollout_confirms() {
    update_under_power_cuts(edge_agent::ota::MAX_UNCONFIRMED_BOOTS).await;
}

/// Six cuts at random moments of a 24 MB update, then cuts of the new slot's trial boots
/// until `trial_boots` of them were cut; then what that must lead to.
async fn update_under_power_cuts(trial_boots_to_cut: u32) {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let key = dir.path().join("release.key");
    let trusted = release_tool(vec!["keygen".into(), "--out".into(), key.display().to_string()]).await;
    let trusted = trusted["public_key"].as_str().unwrap().to_owned();
    let server = Server::with(
        dir.path(),
        &format!(
            "[artifacts]\ndir = \"{}\"\ntrusted_keys = [\"{trusted}\"]\nconduct_interval_ms = 100\n",
            dir.path().join("artifacts").display()
        ),
    );
    let _server_proc = server.start(&http).await;
    let ota = format!("[ota]\ntrusted_keys = [\"{trusted}\"]\nhealth_deadline_s = 20\n");
    let agent = Agent::with(dir.path(), "cab-k1", server.mqtt_port, &[("A1", "m")], &ota);
    world(&http, &server, &agent, "cab-k1").await;
    let service = Service::start(&agent);
    until("the agent answers", || async {
        call(&http, "GET", &format!("{}/healthz", agent.base), None).await.0 == 200
    })
    .await;

    // A 24 MB image, so that a download takes long enough to be cut.
    let image: Vec<u8> = (0..24u32 * 1024 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let id = publish(dir.path(), &server, &key, "2.0.0", "1.0.0", &image).await;
    let cabinet_url = format!("{}/cabinets/cab-k1", server.api);
    let factory = call(&http, "GET", &cabinet_url, None).await.1["firmware"].as_str().unwrap().to_owned();
    let plan = json!({"waves": [{"percent": 100.0}], "soak_s": 0, "silence_after_s": 600, "progress_timeout_s": 3,
                      "retry_base_s": 1, "max_retries": 20, "thresholds": {},
                      "rate": {"per_minute": 600.0, "growth": 1.0, "max_per_minute": 600.0}});
    let body = json!({"name": "2.0.0 under power cuts", "artifact": id, "plan": plan.clone()});
    let (s, created) = call(&http, "POST", &format!("{}/rollouts", server.api), Some(body)).await;
    assert_eq!(s, 201, "{created}");
    let url = format!("{}/rollouts/{}", server.api, created["id"].as_str().unwrap());
    // The slot state on disk after each cut says where it landed: with the new slot on
    // trial and its boot count at the limit, the next boot must roll back (a power cut
    // cannot be told from a crash of the new version), and the rollout pauses.
    use edge_agent::ota::{MAX_UNCONFIRMED_BOOTS, SlotState};
    let state_file = dir.path().join("cab-k1").join("slots").join("state.json");
    let slots = || -> Option<SlotState> { serde_json::from_slice(&std::fs::read(&state_file).ok()?).ok() };
    let trial_boots = || slots().and_then(|s| s.pending).map_or(0, |p| p.tries);
    let mut trial_cuts = Vec::new();
    let mut rng = rand::thread_rng();
    let back = || async {
        until("the agent is back after the cut", || async {
            call(&http, "GET", &format!("{}/healthz", agent.base), None).await.0 == 200
        })
        .await
    };
    // Six cuts at random moments: mostly the download, verification and install.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..600))).await;
        service.kill_9();
        trial_cuts.push(trial_boots());
        back().await;
    }
    // Then the trial boots of the new slot, cut before they confirm (unless the random
    // cuts above already took as many, or took the slot to the limit).
    let forced_back = |cuts: &[u32]| cuts.iter().any(|&t| t >= MAX_UNCONFIRMED_BOOTS);
    while !forced_back(&trial_cuts) && trial_cuts.last().is_some_and(|&t| t < trial_boots_to_cut) {
        let seen = *trial_cuts.last().unwrap_or(&0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let confirmed = loop {
            match slots() {
                Some(s) if s.pending.as_ref().is_some_and(|p| p.tries > seen) => break false,
                Some(s) if s.pending.is_none() && s.version_of(s.active).is_some_and(|v| v == "2.0.0") => break true,
                _ => {}
            }
            assert!(tokio::time::Instant::now() < deadline, "the new slot never booted on trial");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if confirmed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
        service.kill_9();
        trial_cuts.push(trial_boots());
        back().await;
    }
    assert!(trial_cuts.iter().any(|&t| t > 0), "no cut landed on a trial boot: {trial_cuts:?}");
    let forced_back = forced_back(&trial_cuts);
    let end = if forced_back { "paused" } else { "completed" };
    eprintln!("trial boot counts at each cut: {trial_cuts:?}; the rollout must end {end}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let r = loop {
        let r = call(&http, "GET", &url, None).await.1;
        if r["progress"]["phase"]["phase"] == end {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the update did not end {end} (trial boots cut: {trial_cuts:?}): {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if forced_back {
        // Back on the working slot, saying why; the operator ends this rollout and
        // starts the release again.
        let why = r["progress"]["reasons"]["rolled_back"].as_object().unwrap();
        assert!(why.keys().any(|k| k.contains("did not confirm in")), "{r}");
        until("the cabinet is back on its factory slot", || async {
            call(&http, "GET", &cabinet_url, None).await.1["firmware"] == factory.as_str()
        })
        .await;
        let (s, aborted) = call(&http, "POST", &format!("{url}/abort"), None).await;
        assert_eq!(s, 202, "{aborted}");
        let again = run_plan(&http, &server, "2.0.0 again", &id, "completed", plan).await;
        assert_eq!(again["progress"]["waves"][0]["states"]["confirmed"], 1, "{again}");
    } else {
        assert_eq!(r["progress"]["waves"][0]["states"]["confirmed"], 1, "{r}");
    }
    until("the cabinet runs 2.0.0", || async {
        call(&http, "GET", &format!("{}/cabinets/cab-k1", server.api), None).await.1["firmware"] == "2.0.0"
    })
    .await;
    drop(service);
}
