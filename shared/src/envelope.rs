//! The versioned envelope every MQTT payload travels in, and every message body.
//!
//! ```text
//!   {"v":1,"id":"<uuidv7>","cabinet":"c-17","seq":42,"ts":"2026-…Z",
//!    "body":{"kind":"state","data":{…}}}
//! ```
//!
//! * `id` is a UUIDv7 minted where the fact happened; it is the idempotency key.
//! * `seq` counts per cabinet and per direction, so a receiver can spot gaps and replays.
//! * Bodies are tagged enums, one per direction ([`UpBody`], [`DownBody`], [`PresenceBody`],
//!   [`CourierBody`]); a body of the wrong direction does not decode.
//!
//! [`decode`] checks the size limit before it parses anything, then the schema version,
//! then the whole message with unknown fields refused. Each way a payload can be wrong is
//! its own [`DecodeError`] variant with a stable [`DecodeError::reason`] for metrics.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::artifact::SignedManifest;
use crate::ids::{CabinetId, CompartmentId, CourierId, ParcelId};
use crate::seal::{ModelRef, SealedTemplate};

/// The schema version this build writes and the only one it reads.
pub const SCHEMA_VERSION: u16 = 1;

/// Default payload limit. A full `templates` message for a large cabinet (100 sealed
/// 512-float templates ≈ 3 KB each) stays well inside it.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// A message id: UUIDv7, minted where the fact happened.
pub type MessageId = Uuid;

/// The envelope around every body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<B> {
    /// Schema version; see [`SCHEMA_VERSION`].
    pub v: u16,
    /// UUIDv7; the idempotency key of the message.
    pub id: MessageId,
    /// The cabinet the message is from or for; must match the topic.
    pub cabinet: CabinetId,
    /// Per-cabinet, per-direction sequence number.
    pub seq: u64,
    /// When the message was made, by the maker's clock.
    pub ts: DateTime<Utc>,
    pub body: B,
}

impl<B: Serialize> Envelope<B> {
    /// A new envelope stamped now with a fresh UUIDv7.
    pub fn new(cabinet: CabinetId, seq: u64, body: B) -> Self {
        Self { v: SCHEMA_VERSION, id: Uuid::now_v7(), cabinet, seq, ts: Utc::now(), body }
    }

    /// The JSON bytes of this envelope.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these types cannot fail: every map key is a string and no
        // Serialize impl in this crate returns an error.
        serde_json::to_vec(self).expect("envelope bodies always serialise")
    }
}

// ───────────────────────────── edge → server (`up`) ─────────────────────────────

/// Bodies a cabinet publishes on its `up` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum UpBody {
    Hello(Hello),
    State(Heartbeat),
    Events(EventBatch),
    Ota(OtaReport),
    Applied(Applied),
}

impl UpBody {
    /// The body's kind, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            UpBody::Hello(_) => "hello",
            UpBody::State(_) => "state",
            UpBody::Events(_) => "events",
            UpBody::Ota(_) => "ota",
            UpBody::Applied(_) => "applied",
        }
    }
}

/// Which of the two firmware slots is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    A,
    B,
}

/// Compartment sizes, smallest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompartmentSize {
    S,
    M,
    L,
    Xl,
}

impl CompartmentSize {
    pub fn as_str(&self) -> &'static str {
        match self {
            CompartmentSize::S => "s",
            CompartmentSize::M => "m",
            CompartmentSize::L => "l",
            CompartmentSize::Xl => "xl",
        }
    }
}

/// A compartment as the cabinet's hardware reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompartmentInfo {
    pub id: CompartmentId,
    pub size: CompartmentSize,
    /// Reachable from a wheelchair or by a child (door bottom under ~1.2 m).
    #[serde(default)]
    pub low: bool,
}

/// Sent once per connection: who the cabinet is and what it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub firmware: String,
    pub slot: Slot,
    pub hardware: String,
    pub compartments: Vec<CompartmentInfo>,
    /// Fingerprint of the cabinet's X25519 template key ([`crate::seal::CabinetPublicKey::fingerprint`]).
    pub key_fingerprint: String,
    /// The face embedding model this cabinet runs, if face pickup is enabled.
    #[serde(default)]
    pub model: Option<ModelRef>,
}

/// Periodic state heartbeat (QoS 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Compartments whose door is open right now.
    pub open_doors: Vec<CompartmentId>,
    /// Compartments holding a parcel.
    pub occupied: Vec<CompartmentId>,
    /// A finite number: JSON has no infinity, and a value beyond f32 (`1e39`) would
    /// otherwise decode as one and re-encode as `null`.
    #[serde(default, deserialize_with = "finite_f32")]
    pub temperature_c: Option<f32>,
    /// Events in the durable journal not yet acked by the server.
    pub journal_depth: u32,
    pub uptime_s: u64,
}

fn finite_f32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    match Option::<f32>::deserialize(d)? {
        Some(v) if !v.is_finite() => Err(serde::de::Error::custom("a number beyond f32: use a finite value")),
        v => Ok(v),
    }
}

/// A batch of journal events; each is acked individually.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<CabinetEvent>,
}

/// One fact that happened at a cabinet, as written to its journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CabinetEvent {
    /// UUIDv7 minted when the event happened; unique across the fleet.
    pub id: Uuid,
    /// Per-cabinet journal sequence number.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub what: EventKind,
}

/// How a recipient proved who they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PickupMethod {
    Face,
    Code,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventKind {
    /// A courier put a parcel into a compartment and closed the door.
    Deposit { parcel: ParcelId, compartment: CompartmentId, courier: CourierId },
    /// The recipient took the parcel out.
    Pickup { parcel: ParcelId, compartment: CompartmentId, method: PickupMethod },
    /// A courier took an expired parcel back.
    Collected { parcel: ParcelId, compartment: CompartmentId, courier: CourierId },
    /// A face attempt that did not open a door (no raw image ever leaves the cabinet).
    FailedMatch { reason: String },
    /// Hardware or security alarm (door forced, tamper, overheating…).
    Alarm { code: String, detail: String },
}

/// Progress of an OTA action on this cabinet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtaReport {
    pub rollout: Uuid,
    pub status: OtaStatus,
    #[serde(default)]
    pub detail: Option<String>,
    /// Download progress, with `downloading`.
    #[serde(default)]
    pub percent: Option<u8>,
}

/// The steps of an update on the cabinet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtaStatus {
    Downloading,
    Downloaded,
    /// Downloaded and verified; waiting for the maintenance window to install.
    WaitingWindow,
    Installing,
    Rebooting,
    Succeeded,
    RolledBack,
    Failed,
    Refused,
}

/// Desired-state versions the cabinet has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    #[serde(default)]
    pub templates: Option<u64>,
    #[serde(default)]
    pub parcels: Option<u64>,
}

// ─────────────────────────── server → edge (`down`) ────────────────────────────

/// Bodies the server publishes on a cabinet's `down` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum DownBody {
    Ack(Ack),
    Templates(TemplateSet),
    Parcels(ParcelSet),
    Ota(OtaOffer),
    Cmd(Command),
}

/// Event ids now durably stored by the server; the cabinet may drop them from its journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub events: Vec<Uuid>,
}

/// Desired state: the sealed templates this cabinet should hold. `add` is the complete
/// set at `version`: a template the cabinet holds that is not in it is deleted, and the
/// cabinet confirms every removal by reporting `applied.templates >= version`. `revoke`
/// may name removed parcels explicitly; today's server leaves it empty, since absence
/// from `add` already says it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSet {
    pub version: u64,
    pub add: Vec<SealedTemplate>,
    pub revoke: Vec<ParcelId>,
}

/// Desired state: the parcels this cabinet should expect or hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcelSet {
    pub version: u64,
    pub parcels: Vec<ExpectedParcel>,
    /// The server's courier-pass verifying keys (base64 Ed25519), newest first.
    #[serde(default)]
    pub courier_pass_keys: Vec<String>,
    /// Settings the operator changed for this cabinet; unset ones keep the cabinet's own
    /// configuration file values. Versioned with the set, so a cabinet that was offline
    /// applies the latest once.
    #[serde(default)]
    pub settings: CabinetSettings,
}

/// Settings an operator may change remotely. Each is bounded (see [`CabinetSettings::check`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CabinetSettings {
    /// A door open longer than this raises `door_left_open` (5..=3600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub door_left_open_s: Option<u32>,
    /// A released lock whose door is not opened within this relocks (3..=120 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_window_s: Option<u32>,
    /// Wrong codes (or failed faces) within `attempt_window_s` before a lockout (3..=20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_attempts: Option<u32>,
    /// The window failures are counted in (60..=86400 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_window_s: Option<u32>,
    /// How long a lockout lasts (60..=86400 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_s: Option<u32>,
}

impl CabinetSettings {
    /// Checks every set value against its bounds; the error names the setting.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let bounds: [(&'static str, Option<u32>, u32, u32); 5] = [
            ("door_left_open_s", self.door_left_open_s, 5, 3600),
            ("unlock_window_s", self.unlock_window_s, 3, 120),
            ("max_failed_attempts", self.max_failed_attempts, 3, 20),
            ("attempt_window_s", self.attempt_window_s, 60, 86_400),
            ("lockout_s", self.lockout_s, 60, 86_400),
        ];
        for (name, value, lo, hi) in bounds {
            if let Some(v) = value
                && !(lo..=hi).contains(&v)
            {
                return Err((name, format!("must be between {lo} and {hi}")));
            }
        }
        Ok(())
    }
}

/// What the cabinet should do about a parcel in its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParcelStage {
    /// A courier will bring it: the compartment is reserved for it.
    Expected,
    /// It is inside, waiting for its recipient (code and face pickup open).
    Ready,
    /// A courier will take it back out (expired or cancelled); no pickup.
    Collect,
}

/// One parcel in a cabinet's desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedParcel {
    pub parcel: ParcelId,
    pub compartment: CompartmentId,
    pub stage: ParcelStage,
    /// The courier bringing or collecting it.
    #[serde(default)]
    pub courier: Option<CourierId>,
    /// PHC string of the slow hash of the pickup code; the code itself never leaves the server.
    #[serde(default)]
    pub code_hash: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// An update offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtaOffer {
    pub rollout: Uuid,
    pub url: String,
    pub manifest: SignedManifest,
    /// Install no later than this; the cabinet picks a moment inside its maintenance window.
    pub deadline: DateTime<Utc>,
    /// Install only inside this daily window of the cabinet's local time (download any
    /// time); absent: install at once.
    #[serde(default)]
    pub window: Option<InstallWindow>,
}

/// A daily window in local time, minutes after midnight; `start == end` is all day, and
/// a window may cross midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallWindow {
    pub start_min: u32,
    pub end_min: u32,
}

impl InstallWindow {
    /// Whether local minute-of-day `minute_of_day` is inside.
    pub fn contains(&self, minute_of_day: u32) -> bool {
        match self.start_min.cmp(&self.end_min) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => (self.start_min..self.end_min).contains(&minute_of_day),
            std::cmp::Ordering::Greater => minute_of_day >= self.start_min || minute_of_day < self.end_min,
        }
    }

    /// The next moment at or after `now` inside the window, for a place at UTC offset
    /// `offset_min`.
    pub fn next_open(&self, now: DateTime<Utc>, offset_min: i32) -> DateTime<Utc> {
        use chrono::{Duration, Timelike};
        let local = now + Duration::minutes(i64::from(offset_min));
        let m = local.hour() * 60 + local.minute();
        if self.contains(m) {
            return now;
        }
        let wait = (i64::from(self.start_min) - i64::from(m)).rem_euclid(1440);
        let at = now + Duration::minutes(wait);
        at - Duration::seconds(i64::from(at.second())) - Duration::nanoseconds(i64::from(at.nanosecond()))
    }
}

/// A one-off instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub id: Uuid,
    pub action: CommandAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandAction {
    OpenCompartment {
        compartment: CompartmentId,
    },
    Reboot,
    /// The rollout was aborted: drop its offer unless installing already.
    CancelUpdate {
        rollout: Uuid,
    },
}

// ──────────────────────────────── presence ─────────────────────────────────────

/// Retained on `presence`: `online` at connect, `offline` as the MQTT last will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum PresenceBody {
    Online(Session),
    Offline(Session),
}

/// One MQTT session of a cabinet. An `offline` will of an older session that arrives after
/// a newer `online` must not mark the cabinet offline; comparing sessions tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// UUIDv7 minted at connect, so sessions order by time.
    pub session: Uuid,
}

// ──────────────────────────────── couriers ─────────────────────────────────────

/// Bodies on a courier's `assignments` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum CourierBody {
    /// Bring a parcel to a compartment.
    Assignment(CourierTask),
    /// Take an expired or cancelled parcel back.
    Collection(CourierTask),
    /// An assignment was withdrawn (cancelled, or the reservation lapsed).
    Withdrawn(CourierTask),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CourierTask {
    pub parcel: ParcelId,
    pub cabinet: CabinetId,
    pub compartment: CompartmentId,
    pub due: DateTime<Utc>,
}

// ──────────────────────────────── decoding ─────────────────────────────────────

/// Every way a payload can be wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not a JSON object: {0}")]
    NotJson(String),
    #[error("envelope has no schema version \"v\"")]
    MissingVersion,
    #[error("schema version {found} is not supported (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion { found: u64 },
    #[error("unknown field: {0}")]
    UnknownField(String),
    #[error("unknown message kind: {0}")]
    UnknownKind(String),
    #[error("message id {0} is not a UUIDv7")]
    BadMessageId(Uuid),
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// A short, stable label for metrics (`lockerfleet_rejected_messages_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::MissingVersion => "missing_version",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::UnknownField(_) => "unknown_field",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::BadMessageId(_) => "bad_message_id",
            DecodeError::Malformed(_) => "malformed",
        }
    }
}

/// Just enough of an envelope to read its version before trusting the rest.
#[derive(Deserialize)]
struct VersionProbe {
    v: Option<serde_json::Value>,
}

/// Decodes one payload into an envelope with body `B`.
///
/// The size is checked before a single byte is parsed; then the version; then the whole
/// message, with unknown fields and unknown kinds refused.
pub fn decode<B: DeserializeOwned>(payload: &[u8], limit: usize) -> Result<Envelope<B>, DecodeError> {
    if payload.len() > limit {
        return Err(DecodeError::TooLarge { size: payload.len(), limit });
    }
    let probe: VersionProbe = serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    match probe.v {
        None => return Err(DecodeError::MissingVersion),
        Some(v) => match v.as_u64() {
            Some(n) if n == u64::from(SCHEMA_VERSION) => {}
            Some(n) => return Err(DecodeError::UnsupportedVersion { found: n }),
            None => {
                return Err(DecodeError::Malformed(format!("\"v\" must be an integer, not {v}")));
            }
        },
    }
    let envelope: Envelope<B> = serde_json::from_slice(payload).map_err(classify)?;
    if envelope.id.get_version_num() != 7 {
        return Err(DecodeError::BadMessageId(envelope.id));
    }
    Ok(envelope)
}

/// Sorts serde's message into our variants. serde_json reports these two cases with a
/// fixed wording ("unknown field `x`", "unknown variant `x`"), which is covered by tests.
fn classify(e: serde_json::Error) -> DecodeError {
    let msg = e.to_string();
    if msg.starts_with("unknown field") {
        DecodeError::UnknownField(msg)
    } else if msg.starts_with("unknown variant") {
        DecodeError::UnknownKind(msg)
    } else {
        DecodeError::Malformed(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_bounds_name_the_setting() {
        assert!(CabinetSettings::default().check().is_ok());
        let ok = CabinetSettings { door_left_open_s: Some(5), lockout_s: Some(86_400), ..Default::default() };
        assert!(ok.check().is_ok());
        let bad = CabinetSettings { unlock_window_s: Some(121), ..Default::default() };
        assert_eq!(bad.check().unwrap_err().0, "unlock_window_s");
        let bad = CabinetSettings { max_failed_attempts: Some(2), ..Default::default() };
        assert_eq!(bad.check().unwrap_err().0, "max_failed_attempts");
        // An older cabinet's set without settings still decodes.
        let old: ParcelSet = serde_json::from_str(r#"{"version": 3, "parcels": []}"#).unwrap();
        assert_eq!(old.settings, CabinetSettings::default());
    }
    use proptest::prelude::*;

    fn cab() -> CabinetId {
        CabinetId::new("cab-1").unwrap()
    }

    fn heartbeat() -> UpBody {
        UpBody::State(Heartbeat {
            open_doors: vec![],
            occupied: vec![CompartmentId::new("A1").unwrap()],
            temperature_c: Some(21.5),
            journal_depth: 0,
            uptime_s: 10,
        })
    }

    #[test]
    fn envelope_has_the_documented_shape() {
        let env = Envelope::new(cab(), 7, heartbeat());
        let json: serde_json::Value = serde_json::from_slice(&env.encode()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["cabinet"], "cab-1");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["body"]["kind"], "state");
        assert_eq!(json["body"]["data"]["uptime_s"], 10);
        assert_eq!(env.id.get_version_num(), 7);
    }

    #[test]
    fn oversized_payload_is_refused_before_parsing() {
        // Not even JSON: proves the size check runs first.
        let junk = vec![b'x'; 2000];
        assert_eq!(decode::<UpBody>(&junk, 1000), Err(DecodeError::TooLarge { size: 2000, limit: 1000 }));
    }

    #[test]
    fn each_defect_has_its_own_error() {
        let good = serde_json::to_value(Envelope::new(cab(), 1, heartbeat())).unwrap();
        let lim = DEFAULT_MAX_PAYLOAD_BYTES;
        let dec = |v: &serde_json::Value| decode::<UpBody>(&serde_json::to_vec(v).unwrap(), lim);

        assert!(dec(&good).is_ok());
        assert!(matches!(decode::<UpBody>(b"{not json", lim), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode::<UpBody>(b"[1,2]", lim), Err(DecodeError::NotJson(_))));

        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("v");
        assert_eq!(dec(&v), Err(DecodeError::MissingVersion));

        let mut v = good.clone();
        v["v"] = 2.into();
        assert_eq!(dec(&v), Err(DecodeError::UnsupportedVersion { found: 2 }));

        let mut v = good.clone();
        v["extra"] = true.into();
        assert!(matches!(dec(&v), Err(DecodeError::UnknownField(m)) if m.contains("extra")));

        let mut v = good.clone();
        v["body"]["data"]["surprise"] = 1.into();
        assert!(matches!(dec(&v), Err(DecodeError::UnknownField(m)) if m.contains("surprise")));

        let mut v = good.clone();
        v["body"]["kind"] = "teleport".into();
        assert!(matches!(dec(&v), Err(DecodeError::UnknownKind(m)) if m.contains("teleport")));

        let mut v = good.clone();
        v["id"] = Uuid::new_v4().to_string().into();
        assert!(matches!(dec(&v), Err(DecodeError::BadMessageId(_))));

        let mut v = good.clone();
        v["seq"] = "seven".into();
        assert!(matches!(dec(&v), Err(DecodeError::Malformed(_))));

        let mut v = good.clone();
        v["cabinet"] = "a/b".into();
        assert!(matches!(dec(&v), Err(DecodeError::Malformed(m)) if m.contains("cabinet id")));
    }

    #[test]
    fn a_temperature_beyond_f32_is_refused_not_made_infinite() {
        // 1e39 overflows f32: it decoded as +inf, which JSON cannot carry, so the decoded
        // heartbeat re-encoded as `"temperature_c": null` (found by `envelope_up`).
        let mut v = serde_json::to_value(Envelope::new(cab(), 1, heartbeat())).unwrap();
        v["body"]["data"]["temperature_c"] = serde_json::from_str("1e39").unwrap();
        let err = decode::<UpBody>(&serde_json::to_vec(&v).unwrap(), DEFAULT_MAX_PAYLOAD_BYTES).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(ref m) if m.contains("finite")), "{err}");
        v["body"]["data"]["temperature_c"] = serde_json::from_str("-3.4e38").unwrap();
        assert!(decode::<UpBody>(&serde_json::to_vec(&v).unwrap(), DEFAULT_MAX_PAYLOAD_BYTES).is_ok());
    }

    #[test]
    fn a_body_of_the_other_direction_does_not_decode() {
        let ack = Envelope::new(cab(), 1, DownBody::Ack(Ack { events: vec![] }));
        let err = decode::<UpBody>(&ack.encode(), DEFAULT_MAX_PAYLOAD_BYTES).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownKind(_)), "{err}");
    }

    #[test]
    fn unknown_fields_inside_events_are_refused() {
        let mut v = serde_json::to_value(Envelope::new(
            cab(),
            1,
            UpBody::Events(EventBatch {
                events: vec![CabinetEvent {
                    id: Uuid::now_v7(),
                    seq: 1,
                    at: Utc::now(),
                    what: EventKind::Alarm { code: "door_forced".into(), detail: "A1".into() },
                }],
            }),
        ))
        .unwrap();
        v["body"]["data"]["events"][0]["what"]["bonus"] = 1.into();
        let err = decode::<UpBody>(&serde_json::to_vec(&v).unwrap(), DEFAULT_MAX_PAYLOAD_BYTES).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownField(_)), "{err}");
    }

    // ── property tests: every message round-trips ──

    fn arb_text_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}"
    }
    fn arb_cabinet() -> impl Strategy<Value = CabinetId> {
        arb_text_id().prop_map(|s| CabinetId::new(s).unwrap())
    }
    fn arb_compartment() -> impl Strategy<Value = CompartmentId> {
        arb_text_id().prop_map(|s| CompartmentId::new(s).unwrap())
    }
    fn arb_courier() -> impl Strategy<Value = CourierId> {
        arb_text_id().prop_map(|s| CourierId::new(s).unwrap())
    }
    fn arb_uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }
    fn arb_parcel() -> impl Strategy<Value = ParcelId> {
        arb_uuid().prop_map(ParcelId)
    }
    fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
        // Whole microseconds: JSON keeps RFC 3339 with full precision, so any value works.
        (0i64..4_000_000_000, 0u32..1_000_000_000).prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).unwrap())
    }
    fn arb_size() -> impl Strategy<Value = CompartmentSize> {
        prop_oneof![
            Just(CompartmentSize::S),
            Just(CompartmentSize::M),
            Just(CompartmentSize::L),
            Just(CompartmentSize::Xl)
        ]
    }
    fn arb_event_kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            (arb_parcel(), arb_compartment(), arb_courier())
                .prop_map(|(parcel, compartment, courier)| { EventKind::Deposit { parcel, compartment, courier } }),
            (arb_parcel(), arb_compartment(), any::<bool>()).prop_map(|(parcel, compartment, face)| {
                EventKind::Pickup {
                    parcel,
                    compartment,
                    method: if face { PickupMethod::Face } else { PickupMethod::Code },
                }
            }),
            (arb_parcel(), arb_compartment(), arb_courier())
                .prop_map(|(parcel, compartment, courier)| { EventKind::Collected { parcel, compartment, courier } }),
            ".{0,20}".prop_map(|reason| EventKind::FailedMatch { reason }),
            (".{0,10}", ".{0,30}").prop_map(|(code, detail)| EventKind::Alarm { code, detail }),
        ]
    }
    fn arb_up() -> impl Strategy<Value = UpBody> {
        prop_oneof![
            (
                ".{0,16}",
                any::<bool>(),
                proptest::collection::vec((arb_compartment(), arb_size(), any::<bool>()), 0..6),
                "[0-9a-f]{32}"
            )
                .prop_map(|(firmware, a, comps, fp)| UpBody::Hello(Hello {
                    firmware,
                    slot: if a { Slot::A } else { Slot::B },
                    hardware: "lf-cab-2".into(),
                    compartments: comps.into_iter().map(|(id, size, low)| CompartmentInfo { id, size, low }).collect(),
                    key_fingerprint: fp,
                    model: None,
                })),
            (
                proptest::collection::vec(arb_compartment(), 0..4),
                proptest::option::of(-40i16..80),
                any::<u32>(),
                any::<u64>()
            )
                .prop_map(|(doors, t, depth, up)| UpBody::State(Heartbeat {
                    open_doors: doors.clone(),
                    occupied: doors,
                    temperature_c: t.map(f32::from),
                    journal_depth: depth,
                    uptime_s: up,
                })),
            proptest::collection::vec((arb_uuid(), any::<u64>(), arb_time(), arb_event_kind()), 0..5).prop_map(|evs| {
                UpBody::Events(EventBatch {
                    events: evs.into_iter().map(|(id, seq, at, what)| CabinetEvent { id, seq, at, what }).collect(),
                })
            }),
            (arb_uuid(), proptest::option::of(".{0,20}")).prop_map(|(rollout, detail)| UpBody::Ota(OtaReport {
                rollout,
                status: OtaStatus::Installing,
                detail,
                percent: None,
            })),
            (proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()))
                .prop_map(|(templates, parcels)| UpBody::Applied(Applied { templates, parcels })),
        ]
    }
    fn arb_down() -> impl Strategy<Value = DownBody> {
        prop_oneof![
            proptest::collection::vec(arb_uuid(), 0..10).prop_map(|events| DownBody::Ack(Ack { events })),
            (any::<u64>(), proptest::collection::vec(arb_parcel(), 0..5))
                .prop_map(|(version, revoke)| DownBody::Templates(TemplateSet { version, add: vec![], revoke })),
            (any::<u64>(), proptest::collection::vec((arb_parcel(), arb_compartment(), arb_time()), 0..5)).prop_map(
                |(version, ps)| DownBody::Parcels(ParcelSet {
                    version,
                    courier_pass_keys: vec![],
                    settings: CabinetSettings {
                        lockout_s: Some((version % 1000) as u32),
                        ..CabinetSettings::default()
                    },
                    parcels: ps
                        .into_iter()
                        .map(|(parcel, compartment, expires_at)| ExpectedParcel {
                            parcel,
                            compartment,
                            stage: ParcelStage::Ready,
                            courier: None,
                            code_hash: Some("$argon2id$…".into()),
                            expires_at
                        })
                        .collect()
                })
            ),
            (arb_uuid(), arb_compartment()).prop_map(|(id, compartment)| DownBody::Cmd(Command {
                id,
                action: CommandAction::OpenCompartment { compartment }
            })),
            arb_uuid().prop_map(|id| DownBody::Cmd(Command { id, action: CommandAction::Reboot })),
        ]
    }

    fn round_trip<B>(cabinet: CabinetId, seq: u64, body: B) -> Result<(), TestCaseError>
    where
        B: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let env = Envelope::new(cabinet, seq, body);
        let back =
            decode::<B>(&env.encode(), DEFAULT_MAX_PAYLOAD_BYTES).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, env);
        Ok(())
    }

    proptest! {
        #[test]
        fn up_messages_round_trip(c in arb_cabinet(), seq in any::<u64>(), body in arb_up()) {
            round_trip(c, seq, body)?;
        }

        #[test]
        fn down_messages_round_trip(c in arb_cabinet(), seq in any::<u64>(), body in arb_down()) {
            round_trip(c, seq, body)?;
        }

        #[test]
        fn presence_and_courier_messages_round_trip(
            c in arb_cabinet(), s in arb_uuid(), online in any::<bool>(),
            parcel in arb_parcel(), comp in arb_compartment(), due in arb_time(),
        ) {
            let session = Session { session: s };
            round_trip(c.clone(), 0, if online { PresenceBody::Online(session) } else { PresenceBody::Offline(session) })?;
            let task = CourierTask { parcel, cabinet: c.clone(), compartment: comp, due };
            round_trip(c.clone(), 1, CourierBody::Assignment(task.clone()))?;
            round_trip(c, 2, CourierBody::Collection(task))?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<UpBody>(&bytes, DEFAULT_MAX_PAYLOAD_BYTES);
        }
    }
}
