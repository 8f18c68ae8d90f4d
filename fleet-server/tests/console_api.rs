//! The API the operator console stands on, over the real broker and database: who am I,
//! cabinet search with filters and totals, the fleet summary, the alarm inbox with
//! acknowledgements kept across a restart, the compartment grid, remote open as a real
//! MQTT command, courier tasks, the live event stream confined to the caller's tenant,
//! and the console's own files with their security headers.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Backend, FakeCabinet, Fixture, TestServer};
use lockerfleet_shared::CompartmentId;
use lockerfleet_shared::envelope::{CommandAction, DownBody, EventKind, Heartbeat, UpBody};
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(
    cabinets_are_found_by_state_text_and_tag_with_totals,
    alarms_are_listed_fleet_wide_and_acknowledged_once_with_who_and_when,
    a_remote_open_reaches_an_online_cabinet_as_a_command,
);

/// Tenants acme and beta; acme has cabinets `acme-00` … `acme-{n-1}` tagged by region.
async fn fleet(ts: &TestServer, n: usize) {
    ts.create_tenant("acme").await;
    ts.create_tenant("beta").await;
    for i in 0..n {
        let keys = lockerfleet_shared::seal::CabinetKeyPair::generate();
        let region = if i % 2 == 0 { "berlin" } else { "hamburg" };
        let (status, body) = ts
            .post(
                "/api/v1/cabinets",
                &json!({
                    "id": format!("acme-{i:02}"), "tenant": "acme", "name": format!("Station {i}"),
                    "public_key": keys.public().to_base64(), "tags": [format!("region:{region}")],
                    "location": {"lat": 52.5 + (i % 2) as f64, "lon": 13.4},
                    "compartments": [{"id": "A1", "size": "s"}, {"id": "A2", "size": "m"}],
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    ts.register_cabinet("beta", "beta-00").await;
}

async fn online(ts: &TestServer, id: &str) -> FakeCabinet {
    let mut cab = ts.connect_cabinet(id).await;
    cab.hello("2.0.0").await;
    // Listings read the database, which the presence actor writes a moment later.
    ts.wait_until(&format!("{id} online in the database"), || async {
        ts.get(&format!("/api/v1/cabinets?state=online&q={id}")).await.1["total"] == 1
    })
    .await;
    cab
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
}

async fn cabinets_are_found_by_state_text_and_tag_with_totals(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    fleet(&ts, 6).await;
    let _a = online(&ts, "acme-01").await;
    let _b = online(&ts, "acme-04").await;

    let (_, page) = ts.get("/api/v1/cabinets?state=online").await;
    assert_eq!(ids(&page), ["acme-01", "acme-04"]);
    assert_eq!(page["total"], 2);
    let (_, page) = ts.get("/api/v1/cabinets?state=offline&tenant=acme").await;
    assert_eq!(page["total"], 4);
    // Text matches the id or the name, whatever the case; wildcards are literal.
    let (_, page) = ts.get("/api/v1/cabinets?q=ACME-0").await;
    assert_eq!(page["total"], 6);
    let (_, page) = ts.get("/api/v1/cabinets?q=station%203").await;
    assert_eq!(ids(&page), ["acme-03"]);
    let (_, page) = ts.get("/api/v1/cabinets?q=%25").await;
    assert_eq!(page["total"], 0, "{page}");
    let (_, page) = ts.get("/api/v1/cabinets?tag=region:hamburg&state=offline").await;
    assert_eq!(ids(&page), ["acme-03", "acme-05"]);
    let (_, page) = ts.get("/api/v1/cabinets?firmware=2.0.0").await;
    assert_eq!(page["total"], 2);
    // Pages: the total counts every page, the cursor walks them.
    let (_, first) = ts.get("/api/v1/cabinets?q=acme&limit=4").await;
    assert_eq!((first["items"].as_array().unwrap().len(), first["total"].as_u64()), (4, Some(6)));
    let (_, second) =
        ts.get(&format!("/api/v1/cabinets?q=acme&limit=4&after={}", first["next"].as_str().unwrap())).await;
    assert_eq!(ids(&second), ["acme-04", "acme-05"]);
    assert!(second.get("next").is_none());
    // Bad filters are named.
    let (status, err) = ts.get("/api/v1/cabinets?state=asleep").await;
    assert_eq!((status, err["error"]["field"].as_str()), (422, Some("state")));
    let (status, err) = ts.get("/api/v1/cabinets?tag=Bad%20Tag").await;
    assert_eq!((status, err["error"]["field"].as_str()), (422, Some("tag")));

    // The summary counts without listing.
    let (status, s) = ts.get("/api/v1/fleet/summary").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["cabinets"], json!({"total": 7, "online": 2, "offline": 5, "never_seen": 5}));
    assert_eq!(s["by_tenant"]["acme"]["online"], 2);
    assert_eq!(s["by_region"]["berlin"]["total"], 3);
    assert_eq!(s["by_region"]["hamburg"], json!({"total": 3, "online": 1, "offline": 2, "never_seen": 2}));
    assert_eq!(s["by_region"][""]["total"], 1, "beta-00 has no region");
    assert_eq!(s["by_firmware"]["2.0.0"], 2);
    assert_eq!(s["unplaced"], 1);
    let cells = s["map"].as_array().unwrap();
    assert_eq!(cells.iter().map(|c| c["total"].as_u64().unwrap()).sum::<u64>(), 6);
    // A tenant's token counts its own cabinets only, and may not ask for another's.
    let beta = ts.make_token("auditor", Some("beta"), None).await;
    let (_, s) = ts.with_token(&beta).get("/api/v1/fleet/summary").await;
    assert_eq!(s["cabinets"]["total"], 1);
    assert_eq!(ts.with_token(&beta).get("/api/v1/fleet/summary?tenant=acme").await.0, 403);
    assert_eq!(ts.with_token(&beta).get("/api/v1/cabinets?q=acme").await.1["total"], 0);
    ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await;
    let courier = ts.make_token("courier", Some("acme"), Some("k-1")).await;
    assert_eq!(ts.with_token(&courier).get("/api/v1/fleet/summary").await.0, 403);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn raise_alarm(cab: &mut FakeCabinet, seq: u64, code: &str, detail: &str) -> Uuid {
    let id = Uuid::now_v7();
    cab.send_event(id, seq, EventKind::Alarm { code: code.into(), detail: detail.into() }).await;
    cab.expect_down("the alarm's ack", |b| matches!(b, DownBody::Ack(a) if a.events.contains(&id)).then_some(())).await;
    id
}

async fn alarms_are_listed_fleet_wide_and_acknowledged_once_with_who_and_when(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    fleet(&ts, 2).await;
    let mut a0 = online(&ts, "acme-00").await;
    let mut a1 = online(&ts, "acme-01").await;
    let mut b0 = online(&ts, "beta-00").await;
    let forced = raise_alarm(&mut a0, 1, "door_forced", "A1").await;
    let jammed = raise_alarm(&mut a1, 1, "lock_jammed", "A2").await;
    let other = raise_alarm(&mut b0, 1, "door_left_open", "A1").await;
    // A non-alarm event never shows in the inbox.
    a0.send_event(Uuid::now_v7(), 2, EventKind::FailedMatch { reason: "no face".into() }).await;

    let (status, page) = ts.get("/api/v1/alarms").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 3);
    let listed: Vec<&str> = page["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [other.to_string(), jammed.to_string(), forced.to_string()], "newest first");
    assert_eq!(page["items"][2]["code"], "door_forced");
    assert_eq!(page["items"][2]["detail"], "A1");
    assert_eq!(page["items"][2]["tenant"], "acme");
    let (_, one) = ts.get("/api/v1/alarms?limit=1").await;
    let (_, rest) = ts.get(&format!("/api/v1/alarms?limit=2&before={}", one["next"].as_str().unwrap())).await;
    assert_eq!(rest["items"][0]["id"], jammed.to_string());
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);

    let dispatcher = ts.make_token("dispatcher", Some("acme"), None).await;
    let auditor = ts.make_token("auditor", Some("acme"), None).await;
    let d = ts.with_token(&dispatcher);
    // Each tenant sees its own alarms; the auditor may read but not acknowledge.
    assert_eq!(d.get("/api/v1/alarms").await.1["total"], 2);
    assert_eq!(ts.with_token(&auditor).post(&format!("/api/v1/alarms/{forced}/acknowledge"), &json!({})).await.0, 403);
    assert_eq!(d.post(&format!("/api/v1/alarms/{other}/acknowledge"), &json!({})).await.0, 404);
    let (status, acked) =
        d.post(&format!("/api/v1/alarms/{forced}/acknowledge"), &json!({"note": "checked on site"})).await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acknowledged"]["by"], "dispatcher test");
    assert_eq!(acked["acknowledged"]["note"], "checked on site");
    let (status, again) = d.post(&format!("/api/v1/alarms/{forced}/acknowledge"), &json!({})).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("already_acknowledged")));
    let (status, bad) =
        d.post(&format!("/api/v1/alarms/{jammed}/acknowledge"), &json!({"note": "x".repeat(501)})).await;
    assert_eq!((status, bad["error"]["field"].as_str()), (422, Some("note")));
    assert_eq!(d.post(&format!("/api/v1/alarms/{}/acknowledge", Uuid::now_v7()), &json!({})).await.0, 404);
    assert_eq!(d.get("/api/v1/alarms").await.1["total"], 1);
    assert_eq!(ts.get("/api/v1/fleet/summary").await.1["open_alarms"], 2);
    ts.server.stop().await;

    // The acknowledgement is in the database: a restarted server still knows it.
    let ts = fx.start(fx.config()).await;
    let (_, acked) = ts.with_token(&dispatcher).get("/api/v1/alarms?state=acknowledged").await;
    assert_eq!(acked["total"], 1);
    let ack = &acked["items"][0]["acknowledged"];
    assert_eq!(ack["by"], "dispatcher test");
    assert!(ack["at"].as_str().unwrap().starts_with(&chrono::Utc::now().format("%Y-").to_string()));
    let (_, open) = ts.get("/api/v1/alarms?state=open&cabinet=acme-01").await;
    assert_eq!(open["items"][0]["id"], jammed.to_string());
    assert_eq!(ts.get("/api/v1/alarms?state=all").await.1["total"], 3);
    assert_eq!(ts.get("/api/v1/alarms?state=shut").await.0, 422);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_remote_open_reaches_an_online_cabinet_as_a_command(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    fleet(&ts, 2).await;
    let mut cab = online(&ts, "acme-00").await;
    let engineer = ts.make_token("engineer", Some("acme"), None).await;
    let auditor = ts.make_token("auditor", Some("acme"), None).await;
    let e = ts.with_token(&engineer);

    let (status, sent) = e.post("/api/v1/cabinets/acme-00/compartments/A2/open", &json!({})).await;
    assert_eq!(status, 202, "{sent}");
    let command = sent["command"].as_str().unwrap().to_owned();
    let opened = cab
        .expect_down("the open command", |b| match b {
            DownBody::Cmd(c) => match &c.action {
                CommandAction::OpenCompartment { compartment } => Some((c.id.to_string(), compartment.clone())),
                _ => None,
            },
            _ => None,
        })
        .await;
    assert_eq!(opened, (command, CompartmentId::new("A2").unwrap()));

    // Refused: never connected, unknown compartment, a role that may only read.
    let (status, err) = e.post("/api/v1/cabinets/acme-01/compartments/A1/open", &json!({})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("cabinet_offline")));
    assert_eq!(e.post("/api/v1/cabinets/acme-00/compartments/Z9/open", &json!({})).await.0, 404);
    assert_eq!(ts.with_token(&auditor).post("/api/v1/cabinets/acme-00/compartments/A1/open", &json!({})).await.0, 403);
    assert_eq!(e.post("/api/v1/cabinets/beta-00/compartments/A1/open", &json!({})).await.0, 404);
    ts.server.stop().await;
    fx.cleanup().await;
}

#[actix_rt::test]
async fn the_compartment_grid_shows_doors_parcels_and_only_a_template_count() {
    let fx = Fixture::new(Backend::sqlite_embedded().unwrap()).await;
    let ts = fx.start(fx.config()).await;
    fleet(&ts, 1).await;
    ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await;
    let (status, parcel) = ts
        .post(
            "/api/v1/parcels",
            &json!({"tenant": "acme", "reference": "TRK-9", "courier": "k-1", "size": "m", "cabinet": "acme-00"}),
        )
        .await;
    assert_eq!(status, 201, "{parcel}");
    let (_, grid) = ts.get("/api/v1/cabinets/acme-00/compartments").await;
    assert_eq!(grid["templates_held"], 0);
    assert_eq!(grid["compartments"][1]["parcel"]["reference"], "TRK-9");
    assert_eq!(grid["compartments"][1]["parcel"]["state"], "assigned");
    assert_eq!(grid["compartments"][0]["parcel"], Value::Null);
    assert_eq!(grid["compartments"][0]["door"], "unknown", "no heartbeat yet");
    assert!(!grid.to_string().contains("blob"), "no template content: {grid}");

    let mut cab = online(&ts, "acme-00").await;
    cab.send(UpBody::State(Heartbeat {
        open_doors: vec![CompartmentId::new("A1").unwrap()],
        occupied: vec![],
        temperature_c: None,
        journal_depth: 0,
        uptime_s: 5,
    }))
    .await;
    ts.wait_until("the heartbeat's doors", || async {
        ts.get("/api/v1/cabinets/acme-00/compartments").await.1["compartments"][0]["door"] == "open"
    })
    .await;
    let (_, grid) = ts.get("/api/v1/cabinets/acme-00/compartments").await;
    assert_eq!(grid["compartments"][1]["door"], "closed");
    assert_eq!(grid["online"], true);
    assert_eq!(grid["offline"], Value::Null);
    assert_eq!(grid["sessions_24h"], 1);
    cab.kill();
    ts.wait_until("the will is heard", || async {
        ts.get("/api/v1/cabinets/acme-00/compartments").await.1["offline"]["cause"] == "will"
    })
    .await;
    assert_eq!(ts.get("/api/v1/cabinets/nope/compartments").await.0, 404);

    // The courier's tasks: the parcel to deliver. Its own token sees them, another's not.
    ts.post("/api/v1/couriers", &json!({"id": "k-2", "tenant": "acme", "name": "Lee"})).await;
    let kim = ts.make_token("courier", Some("acme"), Some("k-1")).await;
    let lee = ts.make_token("courier", Some("acme"), Some("k-2")).await;
    let (status, tasks) = ts.with_token(&kim).get("/api/v1/couriers/k-1/tasks").await;
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(tasks["items"][0]["task"], "deliver");
    assert_eq!(tasks["items"][0]["reference"], "TRK-9");
    assert_eq!(tasks["items"][0]["compartment"], "A2");
    assert_eq!(ts.with_token(&lee).get("/api/v1/couriers/k-1/tasks").await.0, 403);
    assert_eq!(ts.with_token(&lee).get("/api/v1/couriers/k-2/tasks").await.1["items"], json!([]));
    // Cancelled before the deposit: the compartment is free again, no task remains.
    ts.post(&format!("/api/v1/parcels/{}/cancel", parcel["id"].as_str().unwrap()), &json!({})).await;
    assert_eq!(ts.get("/api/v1/couriers/k-1/tasks").await.1["items"], json!([]));
    // Parcels by the start of their reference.
    assert_eq!(ts.get("/api/v1/parcels?reference=TRK").await.1["items"][0]["reference"], "TRK-9");
    assert_eq!(ts.get("/api/v1/parcels?reference=XYZ").await.1["items"], json!([]));
    ts.server.stop().await;
    fx.cleanup().await;
}

#[actix_rt::test]
async fn me_names_the_role_tenant_and_permitted_actions() {
    let fx = Fixture::new(Backend::sqlite_embedded().unwrap()).await;
    let ts = fx.start(fx.config()).await;
    fleet(&ts, 0).await;
    let (status, me) = ts.get("/api/v1/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!((me["role"].as_str(), me["tenant"].as_str()), (Some("admin"), None));
    assert!(me["actions"].as_array().unwrap().contains(&json!("manage_releases")));
    ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await;
    let kim = ts.make_token("courier", Some("acme"), Some("k-1")).await;
    let (_, me) = ts.with_token(&kim).get("/api/v1/me").await;
    assert_eq!(me["actions"], json!(["read_courier_feed"]));
    assert_eq!((me["courier"].as_str(), me["tenant"].as_str()), (Some("k-1"), Some("acme")));
    // A tenant's engineer may manage releases by role, but rollouts run fleet-wide.
    let eng = ts.make_token("engineer", Some("acme"), None).await;
    let (_, me) = ts.with_token(&eng).get("/api/v1/me").await;
    let actions = me["actions"].as_array().unwrap();
    assert!(actions.contains(&json!("operate_cabinets")) && !actions.contains(&json!("manage_releases")));
    assert_eq!(ts.request("GET", "/api/v1/me", Some("lf_nope"), None).await.0, 401);
    ts.server.stop().await;
    fx.cleanup().await;
}

#[actix_rt::test]
async fn the_live_stream_carries_presence_and_alarms_of_the_callers_tenant_only() {
    let fx = Fixture::new(Backend::sqlite_embedded().unwrap()).await;
    let ts = fx.start(fx.config()).await;
    fleet(&ts, 1).await;
    let beta = ts.make_token("auditor", Some("beta"), None).await;
    let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
    let open = |token: String| {
        let req = client.get(format!("{}/api/v1/live", ts.base)).bearer_auth(token);
        async move { req.send().await.unwrap() }
    };
    let mut admin = open(common::ADMIN_TOKEN.to_owned()).await;
    assert_eq!(admin.headers().get("content-type").unwrap(), "text/event-stream");
    let mut beta_stream = open(beta.clone()).await;
    let (mut abuf, mut bbuf) = (String::new(), String::new());
    common::next_frame(&mut admin, &mut abuf, |f| f.starts_with("event: ready")).await;
    common::next_frame(&mut beta_stream, &mut bbuf, |f| f.starts_with("event: ready")).await;

    // acme's cabinet comes online, raises an alarm, goes away: the admin sees all three.
    let mut cab = ts.connect_cabinet("acme-00").await;
    let f = common::next_frame(&mut admin, &mut abuf, |f| f.starts_with("event: presence")).await;
    assert!(f.contains(r#""cabinet":"acme-00""#) && f.contains(r#""online":true"#), "{f}");
    let alarm = raise_alarm(&mut cab, 1, "door_forced", "A1").await;
    let f = common::next_frame(&mut admin, &mut abuf, |f| f.starts_with("event: alarm\n")).await;
    assert!(f.contains(&alarm.to_string()) && f.contains(r#""code":"door_forced""#), "{f}");
    ts.post(&format!("/api/v1/alarms/{alarm}/acknowledge"), &json!({})).await;
    let f = common::next_frame(&mut admin, &mut abuf, |f| f.starts_with("event: alarm_acknowledged")).await;
    assert!(f.contains(&alarm.to_string()), "{f}");
    cab.kill();
    let f = common::next_frame(&mut admin, &mut abuf, |f| {
        f.starts_with("event: presence") && f.contains(r#""online":false"#)
    })
    .await;
    assert!(f.contains(r#""tenant":"acme""#), "{f}");

    // beta's stream carried none of it: the next thing it sees is its own cabinet.
    let _b = ts.connect_cabinet("beta-00").await;
    let f = common::next_frame(&mut beta_stream, &mut bbuf, |f| !f.starts_with(':')).await;
    assert!(f.starts_with("event: presence") && f.contains(r#""cabinet":"beta-00""#), "{f}");
    // Couriers have no live view of the fleet.
    ts.post("/api/v1/couriers", &json!({"id": "k-1", "tenant": "acme", "name": "Kim"})).await;
    let kim = ts.make_token("courier", Some("acme"), Some("k-1")).await;
    assert_eq!(ts.request("GET", "/api/v1/live", Some(&kim), None).await.0, 403);
    drop(admin);
    drop(beta_stream);
    ts.server.stop().await;
    fx.cleanup().await;
}

/// More alarms between two polls than one poll reads: the stream says `lagged`, so the
/// console reads its inbox again instead of silently missing some.
#[actix_rt::test]
async fn an_alarm_storm_tells_the_console_to_reload() {
    use lockerfleet_shared::envelope::{CabinetEvent, EventBatch};
    let fx = Fixture::new(Backend::sqlite_embedded().unwrap()).await;
    let ts = fx.start(fx.config()).await;
    fleet(&ts, 1).await;
    let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
    let mut stream =
        client.get(format!("{}/api/v1/live", ts.base)).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    let mut buf = String::new();
    common::next_frame(&mut stream, &mut buf, |f| f.starts_with("event: ready")).await;
    let mut cab = ts.connect_cabinet("acme-00").await;
    let storm: Vec<Uuid> = (0..520).map(|_| Uuid::now_v7()).collect();
    for (n, chunk) in storm.chunks(100).enumerate() {
        let events = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| CabinetEvent {
                id: *id,
                seq: (n * 100 + i + 1) as u64,
                at: chrono::Utc::now(),
                what: EventKind::Alarm { code: "door_forced".into(), detail: "A1".into() },
            })
            .collect();
        cab.send(UpBody::Events(EventBatch { events })).await;
    }
    let last = *storm.last().unwrap();
    cab.expect_down("the storm's last ack", |b| {
        matches!(b, DownBody::Ack(a) if a.events.contains(&last)).then_some(())
    })
    .await;
    let f = common::next_frame(&mut stream, &mut buf, |f| f.starts_with("event: lagged")).await;
    assert!(f.contains(r#""what":"alarms""#), "{f}");
    drop(stream);
    ts.server.stop().await;
    fx.cleanup().await;
}

#[actix_rt::test]
async fn the_console_is_served_with_a_strict_policy() {
    let fx = Fixture::new(Backend::sqlite_embedded().unwrap()).await;
    let ts = fx.start(fx.config()).await;
    let client = awc::Client::builder().disable_redirects().finish();
    let get = |path: &str| client.get(format!("{}{path}", ts.base)).send();

    let res = get("/console").await.unwrap();
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(res.headers().get("location").unwrap(), "/console/");
    for page in ["/console/", "/console/cabinets/cab.17", "/console/rollouts"] {
        let mut res = get(page).await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{page}");
        assert_eq!(res.headers().get("content-type").unwrap(), "text/html; charset=utf-8");
        let csp = res.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(res.headers().get("x-content-type-options").unwrap(), "nosniff");
        let body = res.body().await.unwrap();
        assert!(std::str::from_utf8(&body).unwrap().contains(r#"src="/console/js/app.js""#));
    }
    let res = get("/console/js/app.js").await.unwrap();
    assert_eq!(res.headers().get("content-type").unwrap(), "text/javascript; charset=utf-8");
    assert_eq!(res.headers().get("cache-control").unwrap(), "no-cache");
    let etag = res.headers().get("etag").unwrap().to_str().unwrap().to_owned();
    let res = client
        .get(format!("{}/console/js/app.js", ts.base))
        .insert_header(("if-none-match", etag))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 304);
    assert_eq!(get("/console/js/nope.js").await.unwrap().status().as_u16(), 404);
    assert_eq!(
        get("/console/console.css").await.unwrap().headers().get("content-type").unwrap(),
        "text/css; charset=utf-8"
    );
    ts.server.stop().await;
    fx.cleanup().await;
}
