//! Rollouts through the server, over the real broker and database: 200 cabinets (played
//! by MQTT clients that answer OTA offers as an updater would) update through three
//! waves; a bad release stops itself after the canaries; a release that breaks the doors
//! is caught by the health watch; operator commands; the conductor's lease.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Backend, Fixture, TestServer};
use lockerfleet_shared::envelope::{CommandAction, DownBody, OtaReport, OtaStatus, UpBody};
use serde_json::{Value, json};

backend_tests!(
    cabinets_update_wave_by_wave_and_a_bad_release_stops_after_the_canaries,
    operator_commands_and_bad_requests,
    a_wave_that_reports_while_the_database_is_locked_loses_no_report,
    an_offer_that_found_the_cabinet_away_reaches_it_when_it_comes_back
);

/// Uploads a release signed by `key` and returns its artifact id.
async fn upload(ts: &TestServer, key: &ed25519_dalek::SigningKey, version: &str) -> String {
    let bytes = format!("image {version}").into_bytes();
    let mut m = lockerfleet_shared::artifact::describe("edge-agent", version, &["lf-cab-2"], "1.0.0", &bytes);
    m.release_notes = format!("release {version}");
    let signed = lockerfleet_shared::artifact::sign(m, key);
    let (status, created) = ts.post("/api/v1/artifacts", &json!(signed)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let mut res = awc::Client::default()
        .put(format!("{}/api/v1/artifacts/{id}/content", ts.base))
        .bearer_auth(&ts.token)
        .send_body(bytes)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "{:?}", res.body().await);
    id
}

/// Offers and cancellations each cabinet received, by rollout.
type Seen = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

/// Plays `n` cabinets that update when offered. Of the cabinets offered `bad_version`,
/// the first `failing` fail their health check after restarting and roll back; those
/// that install `faulty_version` confirm, then report a door fault after another.
async fn fleet(ts: &TestServer, n: usize, bad_version: &str, failing: usize, faulty_version: &str) -> Seen {
    let seen: Seen = Arc::default();
    let budget = Arc::new(Mutex::new(failing));
    for i in 0..n {
        let id = format!("cab-{i:03}");
        ts.register_cabinet("acme", &id).await;
        let mut cab = ts.connect_cabinet(&id).await;
        cab.hello("1.0.0").await;
        let seen = seen.clone();
        let budget = budget.clone();
        let bad_version = bad_version.to_owned();
        let faulty_version = faulty_version.to_owned();
        actix_rt::spawn(async move {
            let mut seq = 0;
            while let Some(env) = cab.down.recv().await {
                match env.body {
                    DownBody::Ota(offer) => {
                        seen.lock().unwrap().entry(id.clone()).or_default().push(format!("offer {}", offer.rollout));
                        let rolls_back = offer.manifest.manifest.version == bad_version && {
                            let mut left = budget.lock().unwrap();
                            let fail = *left > 0;
                            *left = left.saturating_sub(1);
                            fail
                        };
                        let mut steps = vec![
                            (OtaStatus::Downloading, Some(50)),
                            (OtaStatus::Downloaded, None),
                            (OtaStatus::Installing, None),
                            (OtaStatus::Rebooting, None),
                        ];
                        steps.push((if rolls_back { OtaStatus::RolledBack } else { OtaStatus::Succeeded }, None));
                        for (status, percent) in steps {
                            let detail = (status == OtaStatus::RolledBack).then(|| "health check failed".to_owned());
                            cab.send(UpBody::Ota(OtaReport { rollout: offer.rollout, status, detail, percent })).await;
                        }
                        // Alive after the restart.
                        cab.heartbeat().await;
                        if offer.manifest.manifest.version == "1.4.0" {
                            // Keeps restarting after it confirmed: a new MQTT session
                            // every little while.
                            for _ in 0..6 {
                                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                                let session = lockerfleet_shared::envelope::Session { session: uuid::Uuid::now_v7() };
                                let online = lockerfleet_shared::Envelope::new(
                                    cab.id.clone(),
                                    0,
                                    lockerfleet_shared::envelope::PresenceBody::Online(session),
                                )
                                .encode();
                                let topic = cab.topics.cabinet_presence(&cab.id);
                                cab.client.publish(topic, rumqttc::QoS::AtLeastOnce, true, online).await.unwrap();
                            }
                        }
                        if offer.manifest.manifest.version == faulty_version {
                            // Faults right after the confirmation, microseconds behind it:
                            // they count as after the update because the server dates the
                            // report by its arrival (a report waiting for its batch while
                            // these were stored once made them the week before).
                            for _ in 0..5 {
                                seq += 1;
                                let what = lockerfleet_shared::envelope::EventKind::Alarm {
                                    code: "door_forced".into(),
                                    detail: "A1".into(),
                                };
                                cab.send_event(uuid::Uuid::now_v7(), seq, what).await;
                            }
                        }
                    }
                    DownBody::Cmd(c) => {
                        if let CommandAction::CancelUpdate { rollout } = c.action {
                            seen.lock().unwrap().entry(id.clone()).or_default().push(format!("cancel {rollout}"));
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    seen
}

async fn rollout(ts: &TestServer, id: &str) -> Value {
    ts.get(&format!("/api/v1/rollouts/{id}")).await.1
}

async fn until_phase(ts: &TestServer, id: &str, phase: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = rollout(ts, id).await;
        if r["progress"]["phase"]["phase"] == phase {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "rollout {id} never became {phase}: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)
}

/// What every test here starts from: a fixture, a folder for artifacts, a release key
/// the server's configuration trusts, and a conductor that ticks every 100 ms.
struct Releasing {
    fx: Fixture,
    /// Holds the artifacts folder for the test's length.
    _dir: tempfile::TempDir,
    release_key: ed25519_dalek::SigningKey,
    config: fleet_server::config::Config,
}

impl Releasing {
    async fn new(backend: Backend) -> Self {
        use base64::Engine;
        let fx = Fixture::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let release_key = key();
        let mut config = fx.config();
        config.artifacts.dir = dir.path().to_owned();
        config.artifacts.trusted_keys =
            vec![base64::engine::general_purpose::STANDARD.encode(release_key.verifying_key().as_bytes())];
        config.artifacts.conduct_interval_ms = 100;
        Self { fx, _dir: dir, release_key, config }
    }
}

async fn cabinets_update_wave_by_wave_and_a_bad_release_stops_after_the_canaries(backend: Backend) {
    let Releasing { fx, _dir, release_key, config } = Releasing::new(backend).await;
    let ts = fx.start(config).await;
    ts.create_tenant("acme").await;
    // Cabinets 0-19; in the second release, a third of the canaries fail their health check.
    let good = upload(&ts, &release_key, "1.1.0").await;
    let bad_release = upload(&ts, &release_key, "1.2.0").await;
    let plan = json!({
        "waves": [{"percent": 2.0}, {"percent": 20.0}, {"percent": 100.0}],
        "rate": {"per_minute": 6000.0, "growth": 1.0, "max_per_minute": 6000.0},
        "soak_s": 0, "silence_after_s": 600,
    });
    let seen = fleet(&ts, 200, "1.2.0", 1, "1.3.0").await;

    let body = json!({"name": "1.1.0 everywhere", "artifact": good, "target": {"tenant": "acme"}, "plan": plan});
    let (status, created) = ts.post("/api/v1/rollouts", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let sizes: Vec<u64> =
        created["progress"]["waves"].as_array().unwrap().iter().map(|w| w["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [4, 36, 160]);
    let done = until_phase(&ts, &id, "completed").await;
    let confirmed: u64 = done["progress"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["states"]["confirmed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(confirmed, 200, "{done}");
    assert_eq!(seen.lock().unwrap().len(), 200, "every cabinet was offered");
    assert!(seen.lock().unwrap().values().all(|v| v.len() == 1), "exactly once each");
    assert!(done["owner"].is_string(), "a replica conducted it: {done}");

    // The bad release: a third of the canaries roll back; the rollout aborts itself and
    // nobody outside the canary wave is offered it.
    let (_, cabinets) = ts.get(&format!("/api/v1/rollouts/{id}/cabinets")).await;
    assert_eq!(cabinets.as_array().unwrap().len(), 200);
    seen.lock().unwrap().clear();
    let body = json!({"name": "1.2.0", "artifact": bad_release, "target": {}, "plan": plan});
    let (status, created) = ts.post("/api/v1/rollouts", &body).await;
    assert_eq!(status, 201, "{created}");
    let bad_id = created["id"].as_str().unwrap().to_owned();
    // Which cabinets are the canaries is the conductor's (random) choice; the first to
    // install fails its health check: one of four canaries, over the 5 % threshold.
    let (_, canaries) = ts.get(&format!("/api/v1/rollouts/{bad_id}/cabinets")).await;
    let canary_ids: Vec<String> = canaries
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["wave"] == 0)
        .map(|c| c["cabinet"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(canary_ids.len(), 4);
    let aborted = until_phase(&ts, &bad_id, "aborted").await;
    assert!(aborted["progress"]["phase"]["reason"].as_str().unwrap().contains("rolled back"), "{aborted}");
    assert_eq!(aborted["progress"]["failures"]["rolled_back"], 1, "{aborted}");
    assert_eq!(aborted["progress"]["reasons"]["rolled_back"]["health check failed"], 1, "{aborted}");
    let later: u64 = aborted["progress"]["waves"][1]["states"]["cancelled"].as_u64().unwrap_or(0)
        + aborted["progress"]["waves"][2]["states"]["cancelled"].as_u64().unwrap_or(0);
    assert_eq!(later, 196, "the later waves are withdrawn untouched: {aborted}");
    let (_, rolled) = ts.get(&format!("/api/v1/rollouts/{bad_id}/cabinets?state=rolled_back")).await;
    assert_eq!(rolled.as_array().unwrap().len(), 1, "{rolled}");
    assert_eq!(rolled[0]["reason"], "rolled_back: health check failed", "{rolled}");
    let offered: Vec<String> = seen.lock().unwrap().keys().cloned().collect();
    for cab in &offered {
        assert!(canary_ids.contains(cab), "{cab} is not a canary but was offered the bad release");
    }

    // A release that installs fine but breaks the doors: the cabinets' own traffic after
    // the update shows it, and the rollout pauses before the later waves.
    let faulty = upload(&ts, &release_key, "1.3.0").await;
    let watched = json!({
        "waves": [{"count": 3}, {"percent": 100.0}],
        "rate": {"per_minute": 6000.0, "growth": 1.0, "max_per_minute": 6000.0},
        "soak_s": 4, "health_watch_s": 2, "silence_after_s": 600,
    });
    let body = json!({"name": "1.3.0", "artifact": faulty, "plan": watched});
    let (status, created) = ts.post("/api/v1/rollouts", &body).await;
    assert_eq!(status, 201, "{created}");
    let paused = until_phase(&ts, created["id"].as_str().unwrap(), "paused").await;
    assert!(paused["progress"]["phase"]["reason"].as_str().unwrap().contains("regressed"), "{paused}");
    assert!(paused["progress"]["failures"]["regressed"].as_u64().unwrap() >= 1, "{paused}");
    let why = paused["progress"]["reasons"]["regressed"].as_object().unwrap();
    assert!(why.keys().any(|k| k.contains("door faults")), "{paused}");

    // A release after which cabinets keep restarting (reconnecting): also a regression.
    let (status, _) = ts.post(&format!("/api/v1/rollouts/{}/abort", created["id"].as_str().unwrap()), &json!({})).await;
    assert_eq!(status, 202);
    let flapping = upload(&ts, &release_key, "1.4.0").await;
    let body = json!({"name": "1.4.0", "artifact": flapping, "plan": watched});
    let (status, created) = ts.post("/api/v1/rollouts", &body).await;
    assert_eq!(status, 201, "{created}");
    let paused = until_phase(&ts, created["id"].as_str().unwrap(), "paused").await;
    let why = paused["progress"]["reasons"]["regressed"].as_object().unwrap();
    assert!(why.keys().any(|k| k.contains("reconnects")), "{paused}");
    assert_eq!(paused["progress"]["waves"][1]["states"]["pending"], 197, "the later wave waits: {paused}");
    ts.server.stop().await;
    fx.cleanup().await;
}

/// A whole wave reports while the table its reports go to is locked for longer than the
/// pool's 10 s acquire timeout: the reports wait (or are retried) and every one arrives,
/// so the rollout completes. When each report took a pool connection of its own, those
/// that waited past the timeout were dropped and their cabinets stayed "installing".
async fn a_wave_that_reports_while_the_database_is_locked_loses_no_report(backend: Backend) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let Releasing { fx, _dir, release_key, mut config } = Releasing::new(backend).await;
    config.database.max_connections = 2;
    let ts = fx.start(config).await;
    ts.create_tenant("acme").await;
    let release = upload(&ts, &release_key, "1.1.0").await;

    // Cabinets that answer an offer only when the gate opens, with five reports each.
    let n = 40;
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let offered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..n {
        let id = format!("cab-{i:03}");
        ts.register_cabinet("acme", &id).await;
        let mut cab = ts.connect_cabinet(&id).await;
        cab.hello("1.0.0").await;
        let mut gate = gate_rx.clone();
        let offered = offered.clone();
        actix_rt::spawn(async move {
            while let Some(env) = cab.down.recv().await {
                let DownBody::Ota(offer) = env.body else { continue };
                offered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                gate.wait_for(|open| *open).await.unwrap();
                for status in [
                    OtaStatus::Downloading,
                    OtaStatus::Downloaded,
                    OtaStatus::Installing,
                    OtaStatus::Rebooting,
                    OtaStatus::Succeeded,
                ] {
                    let percent = (status == OtaStatus::Downloading).then_some(50);
                    cab.send(UpBody::Ota(OtaReport { rollout: offer.rollout, status, detail: None, percent })).await;
                }
                cab.heartbeat().await;
            }
        });
    }
    let plan = json!({
        "waves": [{"percent": 100.0}],
        "rate": {"per_minute": 6000.0, "growth": 1.0, "max_per_minute": 6000.0},
        "soak_s": 0, "silence_after_s": 600,
    });
    let body = json!({"name": "1.1.0", "artifact": release, "target": {"tenant": "acme"}, "plan": plan});
    let (status, created) = ts.post("/api/v1/rollouts", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    ts.wait_until("every cabinet was offered the release", || {
        let offered = offered.clone();
        async move { offered.load(std::sync::atomic::Ordering::SeqCst) == n }
    })
    .await;

    // Another client locks the reports' way into the database.
    let locker = sea_orm::Database::connect(fx.database_url.as_str()).await.unwrap();
    let lock = locker.begin().await.unwrap();
    let postgres = fx.database_url.starts_with("postgres");
    if postgres {
        lock.execute_unprepared("LOCK TABLE rollout_inputs IN EXCLUSIVE MODE").await.unwrap();
    } else {
        // Any write takes SQLite's one write lock until the transaction ends.
        lock.execute_unprepared("CREATE TABLE report_blocker (x INTEGER)").await.unwrap();
    }
    gate.send(true).unwrap();
    if postgres {
        // A write waits on the lock without failing: the fault is the time it lasts,
        // longer than the pool's acquire timeout.
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    } else {
        // SQLite gives up after its 10 s busy timeout: wait until the server saw that.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while ts.metric(r#"lockerfleet_ota_reports_total{outcome="retried"}"#).await == 0.0 {
            assert!(tokio::time::Instant::now() < deadline, "no report write failed while the database was locked");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    lock.rollback().await.unwrap();

    let done = until_phase(&ts, &id, "completed").await;
    assert_eq!(done["progress"]["waves"][0]["states"]["confirmed"], n, "{done}");
    assert_eq!(ts.metric(r#"lockerfleet_ota_reports_total{outcome="dropped"}"#).await, 0.0);
    assert!(ts.metric(r#"lockerfleet_ota_reports_total{outcome="queued"}"#).await >= (5 * n) as f64);
    ts.server.stop().await;
    fx.cleanup().await;
}

/// An offer is a message to a cabinet's down topic: a cabinet away at that moment (its
/// clean session keeps nothing) never sees it. When it starts a new session, the
/// conductor offers it again rather than leaving it "offered" until the progress timeout.
async fn an_offer_that_found_the_cabinet_away_reaches_it_when_it_comes_back(backend: Backend) {
    let Releasing { fx, _dir, release_key, config } = Releasing::new(backend).await;
    let ts = fx.start(config).await;
    ts.create_tenant("acme").await;
    let release = upload(&ts, &release_key, "1.1.0").await;
    ts.register_cabinet("acme", "cab-away").await;
    let plan = json!({"waves": [{"percent": 100.0}], "soak_s": 0, "silence_after_s": 600});
    let body = json!({"name": "1.1.0", "artifact": release, "target": {"cabinets": ["cab-away"]}, "plan": plan});
    let (status, created) = ts.post("/api/v1/rollouts", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    ts.wait_until("the cabinet was offered the release while away", || async {
        rollout(&ts, &id).await["progress"]["waves"][0]["states"]["offered"] == 1
    })
    .await;

    // It comes back: a new session (its presence says so), and the offer arrives.
    let mut cab = ts.connect_cabinet("cab-away").await;
    let session = lockerfleet_shared::envelope::Session { session: uuid::Uuid::now_v7() };
    let online = lockerfleet_shared::Envelope::new(
        cab.id.clone(),
        0,
        lockerfleet_shared::envelope::PresenceBody::Online(session),
    )
    .encode();
    let topic = cab.topics.cabinet_presence(&cab.id);
    cab.client.publish(topic, rumqttc::QoS::AtLeastOnce, true, online).await.unwrap();
    cab.hello("1.0.0").await;
    let offer = loop {
        let env = tokio::time::timeout(std::time::Duration::from_secs(15), cab.down.recv())
            .await
            .expect("no offer within 15 s of coming back")
            .expect("the connection stayed up");
        if let DownBody::Ota(offer) = env.body {
            break offer;
        }
    };
    assert_eq!(offer.rollout.to_string(), id);
    for status in [
        OtaStatus::Downloading,
        OtaStatus::Downloaded,
        OtaStatus::Installing,
        OtaStatus::Rebooting,
        OtaStatus::Succeeded,
    ] {
        cab.send(UpBody::Ota(OtaReport { rollout: offer.rollout, status, detail: None, percent: None })).await;
    }
    cab.heartbeat().await;
    let done = until_phase(&ts, &id, "completed").await;
    assert_eq!(done["progress"]["waves"][0]["states"]["confirmed"], 1, "{done}");
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn operator_commands_and_bad_requests(backend: Backend) {
    let Releasing { fx, _dir, release_key, config } = Releasing::new(backend).await;
    let ts = fx.start(config.clone()).await;
    ts.create_tenant("acme").await;
    let art = upload(&ts, &release_key, "1.1.0").await;
    // Cabinets that never answer: offers stay in flight. Four are tagged for the pilot.
    for i in 0..6 {
        ts.register_cabinet("acme", &format!("mute-{i}")).await;
        if i < 4 {
            let tags = json!(["pilot"]);
            let (status, _) =
                ts.request("PUT", &format!("/api/v1/cabinets/mute-{i}/tags"), Some(&ts.token), Some(&tags)).await;
            assert_eq!(status, 200);
        }
    }
    let (status, body) = ts.post("/api/v1/rollouts", &json!({"name": "x", "artifact": uuid::Uuid::now_v7()})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = ts.post("/api/v1/rollouts", &json!({"name": "x", "artifact": "nope"})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("artifact")), "{body}");
    // A wrong type deep in the plan is named by its path.
    let typo = json!({"name": "x", "artifact": art, "plan": {"rate": {"per_minute": "fast"}}});
    let (status, body) = ts.post("/api/v1/rollouts", &typo).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("plan.rate.per_minute")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("expected f64"), "{body}");
    let bad_plan = json!({"name": "x", "artifact": art, "plan": {"waves": [{"percent": 50.0}, {"percent": 20.0}]}});
    let (status, body) = ts.post("/api/v1/rollouts", &bad_plan).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("plan")), "{body}");
    let none = json!({"name": "x", "artifact": art, "target": {"cabinets": ["nobody"]}});
    let (status, body) = ts.post("/api/v1/rollouts", &none).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("target")), "{body}");
    let tenant_admin = ts.make_token("admin", Some("acme"), None).await;
    let body =
        json!({"name": "x", "artifact": art, "target": {"tags": ["pilot"]}, "plan": {"waves": [{"percent": 100.0}]}});
    let (status, _) = ts.request("POST", "/api/v1/rollouts", Some(&tenant_admin), Some(&body)).await;
    assert_eq!(status, 403, "rollouts are fleet-wide");

    let (status, created) = ts.post("/api/v1/rollouts", &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["progress"]["waves"][0]["size"], 4, "only the tagged cabinets: {created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // A tenant's token does not see a rollout whose target spans every tenant.
    let (status, listed) = ts.request("GET", "/api/v1/rollouts", Some(&tenant_admin), None).await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(0)), "{listed}");
    for path in [format!("/api/v1/rollouts/{id}"), format!("/api/v1/rollouts/{id}/cabinets")] {
        assert_eq!(ts.request("GET", &path, Some(&tenant_admin), None).await.0, 404, "{path}");
    }
    assert_eq!(ts.get("/api/v1/rollouts").await.1.as_array().map(Vec::len), Some(1), "the fleet admin sees it");
    ts.wait_until("all four are offered", || async {
        rollout(&ts, &id).await["progress"]["waves"][0]["states"]["offered"] == 4
    })
    .await;
    // The conducting replica exports the progress.
    ts.wait_until("the progress is exported", || async {
        ts.get_text("/metrics").await.lines().any(|l| {
            l.starts_with("lockerfleet_rollout_cabinets{")
                && l.contains(&id)
                && l.contains("state=\"offered\"")
                && l.ends_with(" 4")
        })
    })
    .await;
    for (action, phase) in [("pause", "paused"), ("resume", "running")] {
        let (status, _) = ts.post(&format!("/api/v1/rollouts/{id}/{action}"), &json!({})).await;
        assert_eq!(status, 202);
        until_phase(&ts, &id, phase).await;
    }
    let (status, body) = ts.post(&format!("/api/v1/rollouts/{id}/explode"), &json!({})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("action")), "{body}");

    // A second replica on the same database and broker: the rollout keeps exactly one
    // conductor, and when that replica stops the other takes over.
    let other = fx.start(config).await;
    let first_owner = rollout(&ts, &id).await["owner"].clone();
    ts.server.stop().await;
    other
        .wait_until("the other replica conducts the rollout", || async {
            let r = other.get(&format!("/api/v1/rollouts/{id}")).await.1;
            r["owner"] != first_owner && r["owner"].is_string()
        })
        .await;
    let (status, _) = other.post(&format!("/api/v1/rollouts/{id}/abort"), &json!({})).await;
    assert_eq!(status, 202);
    let aborted = until_phase(&other, &id, "aborted").await;
    assert_eq!(aborted["progress"]["waves"][0]["states"]["cancelled"], 4, "offers not yet installing are withdrawn");
    other.server.stop().await;
    fx.cleanup().await;
}
