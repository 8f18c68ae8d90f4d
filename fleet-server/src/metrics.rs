//! Prometheus metrics the fleet-server exports on `/metrics`.
//!
//! One [`Metrics`] per server instance, each with its own registry (so several servers in
//! one test process never share counters). Every name starts with `lockerfleet_`; the
//! dashboards in `dashboards/` use exactly these names.
//!
//! Most metrics count what *this replica* did or sees. The fleet census
//! (`lockerfleet_fleet_*`, [`Metrics::set_fleet_census`]) is read from the database, so
//! every replica reports the same fleet-wide numbers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Most distinct firmware versions the census names; the rest are counted as `other`.
const MAX_FIRMWARE_LABELS: usize = 20;

/// IANA time-zone areas: a cabinet's region is the area of its zone (`Europe/Berlin` →
/// `Europe`), anything else is `other`, so a label value can never be minted at will.
const REGIONS: [&str; 11] = [
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
    "Etc",
];

/// How long a cabinet has been offline, as the census buckets it (label `since`).
const OFFLINE_SINCE: [(&str, i64); 3] = [("5m", 300), ("1h", 3600), ("24h", 86_400)];

/// The region label of an IANA time zone; `UTC` (the registration default) and its
/// aliases are `Etc`, like `Etc/UTC`.
pub fn region_of(timezone: &str) -> &'static str {
    let area = timezone.split('/').next().unwrap_or_default();
    if matches!(area, "UTC" | "UCT" | "GMT" | "Universal" | "Zulu") {
        return "Etc";
    }
    REGIONS.iter().find(|r| **r == area).copied().unwrap_or("other")
}

/// One registered cabinet, as the fleet census sees it.
#[derive(Debug, Clone)]
pub struct CensusRow {
    pub timezone: String,
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub firmware: Option<String>,
}

/// Handles to every metric; cheap to clone (each handle is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Messages refused before they reached a handler, by reason
    /// (`too_large`, `not_json`, `unknown_kind`, `cabinet_mismatch`, `unregistered_cabinet`…).
    pub rejected_messages: IntCounterVec,
    /// Messages accepted from cabinets, by body kind.
    pub received_messages: IntCounterVec,
    /// Cabinets currently online, as this replica sees them.
    pub cabinets_online: IntGauge,
    /// Registered cabinets this replica tracks.
    pub cabinets_known: IntGauge,
    /// Online → offline transitions, by cause (`will`, `silent`).
    pub cabinets_went_offline: IntCounterVec,
    /// Offline wills of an older session that arrived after a newer session's online.
    pub stale_wills: IntCounter,
    /// Presence flushes to the database, and how long they took.
    pub presence_flush_seconds: Histogram,
    pub presence_flush_errors: IntCounter,
    /// 1 while the MQTT broker accepts new connections (checked by the readiness probe).
    pub broker_accepting: IntGauge,
    pub broker_probe_failures: IntCounter,
    /// 1 while the server's own MQTT link is connected.
    pub mqtt_link_up: IntGauge,
    pub mqtt_link_reconnects: IntCounter,
    /// HTTP API requests, by route and status class.
    pub http_requests: IntCounterVec,
    /// Requests with an unknown, revoked or expired token.
    pub auth_failures: IntCounter,
    /// Parcels assigned a compartment, by where (`chosen` cabinet or `alternative`).
    pub assignments: IntCounterVec,
    /// Outbox deliveries, by channel and outcome (`delivered`, `failed`).
    pub notifications: IntCounterVec,
    /// Undelivered outbox rows seen at the last relay pass.
    pub outbox_pending: IntGauge,
    /// Desired-state pushes to cabinets, by kind (`parcels`, `templates`).
    pub desired_pushes: IntCounterVec,
    /// Cabinet events stored (`stored`) or recognised as already stored (`duplicate`).
    pub ingest_events: IntCounterVec,
    /// Events per ingest batch, and time from batch start to commit.
    pub ingest_batch_size: Histogram,
    pub ingest_batch_seconds: Histogram,
    /// Template operations: `accepted` (recipient-held upload), `enrolled`, `sealed`
    /// (operator-held, by the server), `revoked` (pickup, expiry, cancellation, erasure),
    /// `erased` (recipients).
    pub templates: IntCounterVec,
    /// Acks published to cabinets.
    pub acks_sent: IntCounter,
    /// Parcel transitions caused by cabinet events that the lifecycle refused.
    pub ingest_refused_transitions: IntCounterVec,
    /// Cabinet alarms stored, by code (`door_forced`, `keypad_lockout`…) and failed
    /// face matches (code `failed_match`).
    pub cabinet_alarms: IntCounterVec,
    /// OTA artifacts: `registered`, `uploaded`, `refused` (content not matching its
    /// manifest), `served`, `served_range`.
    pub artifacts: IntCounterVec,
    /// Artifact bytes sent to cabinets from `/ota/{sha256}` (what a rollout costs the
    /// server's uplink; a resumed download counts only the part sent again).
    pub ota_bytes_served: IntCounter,
    /// Cabinets' OTA progress reports: `queued` for their conductor, `unknown_rollout`,
    /// `retried` (a database failure, tried again), `dropped` (given up after retries).
    pub ota_reports: IntCounterVec,
    /// Cabinets' hellos (each queues a desired-state push) and applied-version reports,
    /// recorded in batches: `written`, or `retried` after a database failure.
    pub cabinet_state_writes: IntCounterVec,
    /// Hellos and applied-version reports waiting for the next batch.
    pub cabinet_state_pending: IntGauge,
    /// Cabinets of the rollouts this replica conducts, by rollout, wave and state.
    pub rollout_cabinets: IntGaugeVec,
    /// Failures of those rollouts, by rollout and kind.
    pub rollout_failures: IntGaugeVec,
    /// 1 for each conducted rollout's phase (`running`, `paused`…).
    pub rollout_phase: IntGaugeVec,
    /// MQTT front door (embedded broker): connects refused, by reason (`unknown_user`,
    /// `wrong_password`, `anonymous`, `will_outside_acl`, `tls`, `timeout`, `malformed`,
    /// `not_connect`, `capacity`, `broker_unavailable`).
    pub mqtt_connects_refused: IntCounterVec,
    /// Client packets the front door refused, by packet (`publish`, `subscribe`, …) and
    /// reason (`other_owner`, `not_permitted`, `malformed`).
    pub mqtt_packets_denied: IntCounterVec,
    /// Logins the front door let through, by kind (`cabinet`, `courier`, `anonymous`).
    pub mqtt_logins: IntCounterVec,
    /// Client connections the front door holds open.
    pub mqtt_front_door_connections: IntGauge,
    /// Pickups, by method (`code`, `face`) and outcome: `picked_up` (the parcel moved),
    /// `refused` (the lifecycle refused the cabinet's pickup), `failed` (a failed match
    /// or a wrong code at the cabinet).
    pub pickups: IntCounterVec,
    /// Age of each newly stored cabinet event at commit (cabinet time to commit): a
    /// cabinet that was offline brings old events, a lagging ingest makes all of them old.
    pub ingest_lag_seconds: Histogram,
    /// Events received and waiting in this replica's ingest buffer for their batch.
    pub ingest_buffered: IntGauge,
    /// Outbox rows from enqueued to delivered, by channel (`mqtt` courier notes, `cabinet`
    /// desired state with templates, `webhook`).
    pub outbox_delivery_seconds: HistogramVec,
    /// Fleet census from the database: registered cabinets by region and state
    /// (`online`, `offline`, `never_seen`).
    pub fleet_cabinets: IntGaugeVec,
    /// Fleet census: cabinets offline for at least `since` (5m, 1h, 24h), by region.
    pub fleet_offline: IntGaugeVec,
    /// Fleet census: cabinets by the firmware they last reported.
    pub fleet_firmware: IntGaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique within one registry");
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registers once");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help).expect("valid metric"));
        let gauge = |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        Self {
            rejected_messages: counter_vec(
                "lockerfleet_rejected_messages_total",
                "MQTT messages refused before handling, by reason",
                &["reason"],
            ),
            received_messages: counter_vec(
                "lockerfleet_received_messages_total",
                "MQTT messages accepted from cabinets, by kind",
                &["kind"],
            ),
            cabinets_online: gauge("lockerfleet_cabinets_online", "Cabinets online as seen by this replica"),
            cabinets_known: gauge("lockerfleet_cabinets_known", "Registered cabinets tracked by this replica"),
            cabinets_went_offline: counter_vec(
                "lockerfleet_cabinets_went_offline_total",
                "Cabinet online to offline transitions, by cause",
                &["cause"],
            ),
            stale_wills: counter(
                "lockerfleet_presence_stale_wills_total",
                "Offline wills of an older session ignored after a newer session came online",
            ),
            presence_flush_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("lockerfleet_presence_flush_seconds", "Time to write a presence batch")
                        .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                )
                .expect("valid metric"),
            ),
            presence_flush_errors: counter(
                "lockerfleet_presence_flush_errors_total",
                "Presence batches that failed to write (retried on the next flush)",
            ),
            broker_accepting: gauge("lockerfleet_broker_accepting", "1 while the MQTT broker accepts new connections"),
            broker_probe_failures: counter(
                "lockerfleet_broker_probe_failures_total",
                "Readiness probe connections the broker did not accept",
            ),
            mqtt_link_up: gauge("lockerfleet_mqtt_link_up", "1 while the server's MQTT link is connected"),
            mqtt_link_reconnects: counter(
                "lockerfleet_mqtt_link_reconnects_total",
                "Times the server's MQTT link lost its connection",
            ),
            http_requests: counter_vec(
                "lockerfleet_http_requests_total",
                "HTTP API requests, by route and status class",
                &["route", "status"],
            ),
            auth_failures: counter(
                "lockerfleet_auth_failures_total",
                "API requests refused for an unknown, revoked or expired token",
            ),
            assignments: counter_vec(
                "lockerfleet_assignments_total",
                "Parcels assigned a compartment, by chosen or alternative cabinet",
                &["cabinet"],
            ),
            notifications: counter_vec(
                "lockerfleet_notifications_total",
                "Outbox deliveries by channel and outcome",
                &["channel", "outcome"],
            ),
            outbox_pending: gauge("lockerfleet_outbox_pending", "Undelivered outbox rows at the last relay pass"),
            desired_pushes: counter_vec(
                "lockerfleet_desired_state_pushes_total",
                "Desired-state messages published to cabinets, by kind",
                &["kind"],
            ),
            rollout_cabinets: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("lockerfleet_rollout_cabinets", "Cabinets of conducted rollouts by wave and state"),
                    &["rollout", "wave", "state"],
                )
                .expect("valid metric"),
            ),
            rollout_failures: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("lockerfleet_rollout_failures", "Failed cabinets of conducted rollouts by kind"),
                    &["rollout", "kind"],
                )
                .expect("valid metric"),
            ),
            rollout_phase: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("lockerfleet_rollout_phase", "1 for the phase each conducted rollout is in"),
                    &["rollout", "name", "phase"],
                )
                .expect("valid metric"),
            ),
            artifacts: counter_vec(
                "lockerfleet_artifacts_total",
                "OTA artifacts registered, uploaded, refused and served",
                &["outcome"],
            ),
            cabinet_alarms: counter_vec(
                "lockerfleet_cabinet_alarms_total",
                "Cabinet alarms and failed face matches stored, by code",
                &["code"],
            ),
            ingest_events: counter_vec(
                "lockerfleet_ingest_events_total",
                "Cabinet events stored, or recognised as duplicates",
                &["outcome"],
            ),
            ingest_batch_size: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("lockerfleet_ingest_batch_size", "Events per ingest batch")
                        .buckets(vec![1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0]),
                )
                .expect("valid metric"),
            ),
            ingest_batch_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("lockerfleet_ingest_batch_seconds", "Time to commit one ingest batch")
                        .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
                )
                .expect("valid metric"),
            ),
            templates: counter_vec(
                "lockerfleet_templates_total",
                "Template operations by kind (accepted, enrolled, sealed, revoked, erased)",
                &["op"],
            ),
            acks_sent: counter("lockerfleet_acks_sent_total", "Ack messages published to cabinets"),
            ota_bytes_served: counter(
                "lockerfleet_ota_bytes_served_total",
                "OTA artifact bytes sent to cabinets from /ota/{sha256}",
            ),
            ota_reports: counter_vec(
                "lockerfleet_ota_reports_total",
                "Cabinets' OTA progress reports queued for their rollout, for unknown rollouts, retried or dropped",
                &["outcome"],
            ),
            cabinet_state_writes: counter_vec(
                "lockerfleet_cabinet_state_writes_total",
                "Cabinets' hellos and applied-version reports recorded in batches, by kind (hello, applied) and outcome (written, retried)",
                &["kind", "outcome"],
            ),
            cabinet_state_pending: gauge(
                "lockerfleet_cabinet_state_pending",
                "Cabinets' hellos and applied-version reports waiting for the next batched write",
            ),
            ingest_refused_transitions: counter_vec(
                "lockerfleet_ingest_refused_transitions_total",
                "Cabinet events whose parcel transition the lifecycle refused, by event kind",
                &["kind"],
            ),
            mqtt_connects_refused: counter_vec(
                "lockerfleet_mqtt_connects_refused_total",
                "MQTT connects the front door refused, by reason",
                &["reason"],
            ),
            mqtt_packets_denied: counter_vec(
                "lockerfleet_mqtt_packets_denied_total",
                "MQTT client packets the front door refused, by packet and reason",
                &["packet", "reason"],
            ),
            mqtt_logins: counter_vec(
                "lockerfleet_mqtt_logins_total",
                "MQTT logins the front door let through, by kind",
                &["kind"],
            ),
            mqtt_front_door_connections: gauge(
                "lockerfleet_mqtt_front_door_connections",
                "Client connections open on the MQTT front door",
            ),
            pickups: counter_vec(
                "lockerfleet_pickups_total",
                "Pickups by method and outcome (picked_up, refused, failed)",
                &["method", "outcome"],
            ),
            ingest_lag_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lockerfleet_ingest_lag_seconds",
                        "Age of newly stored cabinet events at commit, from the cabinet's clock",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0,
                        86_400.0,
                    ]),
                )
                .expect("valid metric"),
            ),
            ingest_buffered: gauge(
                "lockerfleet_ingest_buffered_events",
                "Cabinet events waiting in this replica's ingest buffer",
            ),
            outbox_delivery_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "lockerfleet_outbox_delivery_seconds",
                        "Outbox rows from enqueued to delivered, by channel",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 120.0, 600.0, 3600.0,
                    ]),
                    &["channel"],
                )
                .expect("valid metric"),
            ),
            fleet_cabinets: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("lockerfleet_fleet_cabinets", "Registered cabinets by region and state (database)"),
                    &["region", "state"],
                )
                .expect("valid metric"),
            ),
            fleet_offline: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "lockerfleet_fleet_offline_cabinets",
                        "Cabinets offline for at least `since`, by region (database)",
                    ),
                    &["region", "since"],
                )
                .expect("valid metric"),
            ),
            fleet_firmware: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("lockerfleet_fleet_firmware_cabinets", "Cabinets by last reported firmware (database)"),
                    &["firmware"],
                )
                .expect("valid metric"),
            ),
            registry: r,
        }
    }

    /// Sets the `lockerfleet_fleet_*` gauges from every registered cabinet. A cabinet
    /// offline with no `last_seen_at` never connected: it is `never_seen`, not offline.
    pub fn set_fleet_census(&self, cabinets: &[CensusRow], now: DateTime<Utc>) {
        let mut states: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut offline: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut firmware: BTreeMap<&str, i64> = BTreeMap::new();
        for c in cabinets {
            let region = region_of(&c.timezone);
            for (since, _) in OFFLINE_SINCE {
                offline.entry((region, since)).or_default();
            }
            let state = match (c.online, c.last_seen_at) {
                (true, _) => "online",
                (false, None) => "never_seen",
                (false, Some(seen)) => {
                    let away = (now - seen).num_seconds();
                    for (since, secs) in OFFLINE_SINCE {
                        if away >= secs {
                            *offline.entry((region, since)).or_default() += 1;
                        }
                    }
                    "offline"
                }
            };
            *states.entry((region, state)).or_default() += 1;
            if let Some(f) = c.firmware.as_deref().filter(|f| !f.is_empty()) {
                *firmware.entry(f).or_default() += 1;
            }
        }
        // The most common versions keep their names; a long tail is folded into `other`.
        let mut versions: Vec<(&str, i64)> = firmware.into_iter().collect();
        versions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let other: i64 = versions.iter().skip(MAX_FIRMWARE_LABELS).map(|(_, n)| n).sum();
        versions.truncate(MAX_FIRMWARE_LABELS);
        self.fleet_cabinets.reset();
        self.fleet_offline.reset();
        self.fleet_firmware.reset();
        for ((region, state), n) in states {
            self.fleet_cabinets.with_label_values(&[region, state]).set(n);
        }
        for ((region, since), n) in offline {
            self.fleet_offline.with_label_values(&[region, since]).set(n);
        }
        for (version, n) in versions {
            self.fleet_firmware.with_label_values(&[version]).set(n);
        }
        if other > 0 {
            self.fleet_firmware.with_label_values(&["other"]).set(other);
        }
    }

    /// Text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text encoder writes UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    fn cab(tz: &str, online: bool, seen_ago_s: Option<i64>, firmware: Option<&str>, now: DateTime<Utc>) -> CensusRow {
        CensusRow {
            timezone: tz.to_owned(),
            online,
            last_seen_at: seen_ago_s.map(|s| now - chrono::Duration::seconds(s)),
            firmware: firmware.map(str::to_owned),
        }
    }

    #[test]
    fn the_census_counts_cabinets_by_region_state_offline_age_and_firmware() {
        let m = Metrics::new();
        let now = Utc::now();
        let rows = vec![
            cab("Europe/Berlin", true, Some(1), Some("1.2.0"), now),
            cab("Europe/Paris", false, Some(400), Some("1.2.0"), now),
            cab("Europe/Paris", false, Some(7200), Some("1.1.0"), now),
            cab("America/New_York", false, None, None, now),
            cab("Mars/Olympus", true, Some(1), Some("1.2.0"), now),
            cab("UTC", true, Some(1), Some("1.2.0"), now),
        ];
        m.set_fleet_census(&rows, now);
        let g = |region: &str, state: &str| m.fleet_cabinets.with_label_values(&[region, state]).get();
        assert_eq!(g("Europe", "online"), 1);
        assert_eq!(g("Europe", "offline"), 2);
        assert_eq!(g("America", "never_seen"), 1);
        assert_eq!(g("other", "online"), 1, "an unknown area is `other`, never a new label");
        assert_eq!(g("Etc", "online"), 1, "UTC, the registration default, is Etc");
        let off = |region: &str, since: &str| m.fleet_offline.with_label_values(&[region, since]).get();
        assert_eq!((off("Europe", "5m"), off("Europe", "1h"), off("Europe", "24h")), (2, 1, 0));
        assert_eq!(off("America", "5m"), 0, "a cabinet that never connected is not offline");
        assert_eq!(m.fleet_firmware.with_label_values(&["1.2.0"]).get(), 4);
        assert_eq!(m.fleet_firmware.with_label_values(&["1.1.0"]).get(), 1);

        // The next census replaces the last: a region without cabinets disappears.
        m.set_fleet_census(&rows[..1], now);
        let text = m.render();
        assert!(!text.contains("region=\"America\""), "{text}");
        assert_eq!(g("Europe", "online"), 1);
    }

    #[test]
    fn a_long_tail_of_firmware_versions_is_folded_into_other() {
        let m = Metrics::new();
        let now = Utc::now();
        let rows: Vec<_> = (0..MAX_FIRMWARE_LABELS + 5)
            .map(|i| cab("Europe/Rome", true, Some(1), Some(&format!("0.0.{i}")), now))
            .collect();
        m.set_fleet_census(&rows, now);
        let text = m.render();
        let labels = text.lines().filter(|l| l.starts_with("lockerfleet_fleet_firmware_cabinets{")).count();
        assert_eq!(labels, MAX_FIRMWARE_LABELS + 1, "{text}");
        assert_eq!(m.fleet_firmware.with_label_values(&["other"]).get(), 5);
    }
}
