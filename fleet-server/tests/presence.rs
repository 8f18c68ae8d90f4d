//! A cabinet's presence end to end: registered over HTTP, connected over real MQTT,
//! online with hello and heartbeats, offline on its last will or when it falls silent.
//! (Bad messages, one test per kind, are in `bad_input.rs`.)

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Backend, FakeCabinet, Fixture, TestServer};
use lockerfleet_shared::Envelope;
use lockerfleet_shared::envelope::{PresenceBody, Session};
use rumqttc::QoS;
use uuid::Uuid;

backend_tests!(
    cabinet_goes_online_with_hello_and_offline_on_its_last_will,
    a_late_will_of_an_old_session_leaves_the_cabinet_online,
    a_silent_cabinet_is_marked_offline,
    presence_survives_a_server_restart,
);

async fn cabinet_goes_online_with_hello_and_offline_on_its_last_will(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-1").await;

    let before = ts.cabinet_view("cab-1").await;
    assert_eq!(before["online"], false);
    assert!(before["last_seen_at"].is_null());

    let mut cab = ts.connect_cabinet("cab-1").await;
    cab.hello("1.4.2").await;
    cab.heartbeat().await;
    ts.wait_until("cab-1 shows online with its firmware", || async {
        let v = ts.cabinet_view("cab-1").await;
        v["online"] == true && v["firmware"] == "1.4.2"
    })
    .await;
    let v = ts.cabinet_view("cab-1").await;
    assert_eq!(v["hardware"], "lf-cab-2");
    assert_eq!(v["slot"], "a");
    assert!(v["last_seen_at"].is_string(), "{v}");
    assert_eq!(ts.metric("lockerfleet_cabinets_online").await, 1.0);

    cab.kill();
    ts.wait_until("cab-1 shows offline after its will", || async { ts.cabinet_view("cab-1").await["online"] == false })
        .await;
    assert_eq!(ts.metric("lockerfleet_cabinets_went_offline_total{cause=\"will\"}").await, 1.0);
    assert_eq!(ts.metric("lockerfleet_cabinets_online").await, 0.0);
    // The database holds it too, not only the actor (written by the next flush).
    // Offline and with its firmware: a row still as registered (never written online) is
    // offline too, and must not pass for the will's write.
    ts.wait_until("the database has cab-1 offline after its hello", || async {
        let row = ts.server.store.cabinet("cab-1").await.unwrap().unwrap().cabinet;
        !row.online && row.firmware.is_some()
    })
    .await;
    let row = ts.server.store.cabinet("cab-1").await.unwrap().unwrap().cabinet;
    assert_eq!(row.firmware.as_deref(), Some("1.4.2"));
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn a_late_will_of_an_old_session_leaves_the_cabinet_online(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-1").await;
    let old_session = Uuid::now_v7();
    let mut cab = ts.connect_cabinet("cab-1").await;
    assert!(cab.session > old_session);
    cab.heartbeat().await;
    ts.wait_until("cab-1 online", || async { ts.cabinet_view("cab-1").await["online"] == true }).await;

    // The will of a connection that was replaced arrives late.
    let late = Envelope::new(cab.id.clone(), 0, PresenceBody::Offline(Session { session: old_session }));
    cab.client.publish(ts.topics.cabinet_presence(&cab.id), QoS::AtLeastOnce, false, late.encode()).await.unwrap();
    ts.wait_for_metric("lockerfleet_presence_stale_wills_total", 1.0).await;
    assert_eq!(ts.cabinet_view("cab-1").await["online"], true);

    // The current session's will does count.
    let current = Envelope::new(cab.id.clone(), 0, PresenceBody::Offline(Session { session: cab.session }));
    cab.client.publish(ts.topics.cabinet_presence(&cab.id), QoS::AtLeastOnce, false, current.encode()).await.unwrap();
    ts.wait_until("cab-1 offline", || async { ts.cabinet_view("cab-1").await["online"] == false }).await;
    ts.server.stop().await;
    fx.cleanup().await;
}

/// A server that finds a cabinet silent after a second, and `cab-1` connected and online
/// (no will will fire while the returned cabinet lives); it says nothing after that.
async fn one_cabinet_online_stale_after_a_second(backend: Backend) -> (Fixture, TestServer, FakeCabinet) {
    let fx = Fixture::new(backend).await;
    let mut config = fx.config();
    config.presence.stale_after_s = 1;
    let ts = fx.start(config).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-1").await;
    let cab = ts.connect_cabinet("cab-1").await;
    ts.wait_until("cab-1 online", || async { ts.cabinet_view("cab-1").await["online"] == true }).await;
    (fx, ts, cab)
}

async fn a_silent_cabinet_is_marked_offline(backend: Backend) {
    let (fx, ts, _cab) = one_cabinet_online_stale_after_a_second(backend).await;
    ts.wait_until("cab-1 marked offline for silence", || async { ts.cabinet_view("cab-1").await["online"] == false })
        .await;
    assert_eq!(ts.metric("lockerfleet_cabinets_went_offline_total{cause=\"silent\"}").await, 1.0);
    ts.server.stop().await;
    fx.cleanup().await;
}

async fn presence_survives_a_server_restart(backend: Backend) {
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-1").await;
    let mut cab = ts.connect_cabinet("cab-1").await;
    cab.hello("3.1.0").await;
    ts.wait_until("cab-1 online", || async { ts.cabinet_view("cab-1").await["firmware"] == "3.1.0" }).await;
    cab.kill();
    ts.wait_until("cab-1 offline", || async { ts.cabinet_view("cab-1").await["online"] == false }).await;
    let seen = ts.cabinet_view("cab-1").await["last_seen_at"].clone();
    ts.server.stop().await;

    // A new server on the same database knows what the old one learned.
    let ts = fx.start(fx.config()).await;
    let v = ts.cabinet_view("cab-1").await;
    assert_eq!(v["firmware"], "3.1.0");
    assert_eq!(v["online"], false);
    assert_eq!(v["last_seen_at"], seen);
    assert_eq!(ts.metric("lockerfleet_cabinets_known").await, 1.0);
    ts.server.stop().await;
    fx.cleanup().await;
}

mod replicas {
    use super::*;

    backend_tests!(
        presence_writes_of_a_replica_that_saw_less_never_undo_newer_facts,
        presence_flips_are_read_newest_first_and_bounded,
        a_cabinet_another_replica_hears_from_is_not_called_silent,
    );
}

/// Two replicas each see part of a cabinet's traffic. Whatever order their flushes land
/// in, the database keeps the newest facts.
async fn presence_writes_of_a_replica_that_saw_less_never_undo_newer_facts(backend: Backend) {
    use fleet_server::store::{OnlineChange, PresenceUpdate};
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    ts.register_cabinet("acme", "cab-1").await;
    let store = &ts.server.store;
    let (old_session, new_session) = (Uuid::now_v7(), Uuid::now_v7());
    let now = chrono::Utc::now();
    let update = |seen, online| PresenceUpdate {
        cabinet: "cab-1".into(),
        seen,
        hello: None,
        online,
        online_at: None,
        sessions: vec![],
    };

    // Replica A saw the new session come online just now.
    store
        .write_presence(&[update(Some(now), Some(OnlineChange::Online { session: Some(new_session) }))])
        .await
        .unwrap();
    // Replica B flushes late: an older heartbeat, and the will of the old session.
    store
        .write_presence(&[update(
            Some(now - chrono::Duration::minutes(5)),
            Some(OnlineChange::Will { session: old_session }),
        )])
        .await
        .unwrap();
    // Replica C, which saw nothing for a while, thinks the cabinet fell silent.
    store
        .write_presence(&[update(None, Some(OnlineChange::Silent { cutoff: now - chrono::Duration::minutes(1) }))])
        .await
        .unwrap();
    let row = store.cabinet("cab-1").await.unwrap().unwrap().cabinet;
    assert!(row.online, "an old will or a stale silence marked a live cabinet offline");
    assert_eq!(row.session, Some(new_session));
    let kept = row.last_seen_at.unwrap();
    assert!((kept - now).num_milliseconds().abs() < 1, "last seen moved backwards to {kept}");
    // The consoles' live feed has one flip: online, stamped by A's write; the refused
    // writes of B and C stamped nothing.
    let before = now - chrono::Duration::seconds(5);
    let flips = store.presence_changes_after(before, 10).await.unwrap();
    assert_eq!(flips.len(), 1, "{flips:?}");
    assert!(flips[0].online && flips[0].cabinet == "cab-1" && flips[0].tenant == "acme", "{flips:?}");
    let first_flip = flips[0].at;
    // Online again while online is no flip either.
    store.write_presence(&[update(None, Some(OnlineChange::Online { session: Some(new_session) }))]).await.unwrap();
    assert_eq!(store.presence_changes_after(before, 10).await.unwrap()[0].at, first_flip);

    // The current session's will, and a real silence, do count.
    store.write_presence(&[update(None, Some(OnlineChange::Will { session: new_session }))]).await.unwrap();
    assert!(!store.cabinet("cab-1").await.unwrap().unwrap().cabinet.online);
    let flips = store.presence_changes_after(before, 10).await.unwrap();
    assert!(flips.len() == 1 && !flips[0].online && flips[0].at > first_flip, "{flips:?}");
    store.write_presence(&[update(None, Some(OnlineChange::Online { session: None }))]).await.unwrap();
    store
        .write_presence(&[update(None, Some(OnlineChange::Silent { cutoff: now + chrono::Duration::minutes(1) }))])
        .await
        .unwrap();
    assert!(!store.cabinet("cab-1").await.unwrap().unwrap().cabinet.online);
    ts.server.stop().await;
    fx.cleanup().await;
}

/// Flips written in one batch share their time; they are read newest first by (time,
/// id), at most as many as asked for, and a later flip of one of them moves it to the
/// front with its new state.
async fn presence_flips_are_read_newest_first_and_bounded(backend: Backend) {
    use fleet_server::store::{OnlineChange, PresenceUpdate};
    let fx = Fixture::new(backend).await;
    let ts = fx.start(fx.config()).await;
    ts.create_tenant("acme").await;
    let ids = ["cab-a", "cab-b", "cab-c", "cab-d", "cab-e"];
    for id in ids {
        ts.register_cabinet("acme", id).await;
    }
    let store = &ts.server.store;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let change = |id: &str, online: OnlineChange| PresenceUpdate {
        cabinet: id.into(),
        seen: None,
        hello: None,
        online: Some(online),
        online_at: None,
        sessions: vec![],
    };
    store.write_presence(&ids.map(|id| change(id, OnlineChange::Online { session: None }))).await.unwrap();
    let cabinets =
        |flips: &[fleet_server::store::PresenceFlip]| flips.iter().map(|f| f.cabinet.clone()).collect::<Vec<_>>();
    let flips = store.presence_changes_after(before, 100).await.unwrap();
    assert_eq!(cabinets(&flips), ["cab-e", "cab-d", "cab-c", "cab-b", "cab-a"]);
    assert!(flips.iter().all(|f| f.online && f.at == flips[0].at), "one batch, one time: {flips:?}");
    assert_eq!(cabinets(&store.presence_changes_after(before, 2).await.unwrap()), ["cab-e", "cab-d"]);
    store.write_presence(&[change("cab-b", OnlineChange::Silent { cutoff: chrono::Utc::now() })]).await.unwrap();
    let flips = store.presence_changes_after(before, 2).await.unwrap();
    assert_eq!(cabinets(&flips), ["cab-b", "cab-e"]);
    assert!(!flips[0].online && flips[0].at > flips[1].at, "{flips:?}");
    ts.server.stop().await;
    fx.cleanup().await;
}

/// This replica hears nothing from a cabinet whose messages go to another replica (a
/// shared subscription): it must not call it silent while the database shows someone
/// hears from it, and when another replica takes it offline it agrees without counting
/// a silence of its own.
async fn a_cabinet_another_replica_hears_from_is_not_called_silent(backend: Backend) {
    use fleet_server::store::{OnlineChange, PresenceUpdate};
    let (fx, ts, _cab) = one_cabinet_online_stale_after_a_second(backend).await;
    let store = &ts.server.store;
    let other_replica = |online: Option<OnlineChange>| PresenceUpdate {
        cabinet: "cab-1".into(),
        seen: online.is_none().then(chrono::Utc::now),
        hello: None,
        online,
        online_at: None,
        sessions: vec![],
    };
    // Only the other replica hears from it: its flushes land every 200 ms, as
    // heartbeats spread over replicas would, until it finds the cabinet silent below.
    let hearing = std::rc::Rc::new(std::cell::Cell::new(true));
    let heard = {
        let (store, hearing) = (store.clone(), hearing.clone());
        actix_rt::spawn(async move {
            while hearing.get() {
                store.write_presence(&[other_replica(None)]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // Three stale periods later, this replica has not called it silent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ts.metric("lockerfleet_cabinets_went_offline_total{cause=\"silent\"}").await, 0.0);
    assert_eq!(ts.metric("lockerfleet_cabinets_online").await, 1.0);
    let flips = store.presence_changes_after(chrono::Utc::now() - chrono::Duration::minutes(1), 10).await.unwrap();
    assert!(flips.len() == 1 && flips[0].online, "nothing but its coming online: {flips:?}");

    // The other replica finds it silent and takes it offline: this one agrees, without a
    // silence of its own.
    hearing.set(false);
    heard.await.unwrap();
    store
        .write_presence(&[other_replica(Some(OnlineChange::Silent {
            cutoff: chrono::Utc::now() + chrono::Duration::minutes(1),
        }))])
        .await
        .unwrap();
    ts.wait_until("this replica agrees it is offline", || async {
        ts.metric("lockerfleet_cabinets_online").await == 0.0
    })
    .await;
    assert_eq!(ts.metric("lockerfleet_cabinets_went_offline_total{cause=\"silent\"}").await, 0.0);
    assert_eq!(ts.cabinet_view("cab-1").await["online"], false);
    ts.server.stop().await;
    fx.cleanup().await;
}
