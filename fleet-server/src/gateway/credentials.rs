//! MQTT logins the server issues: one per cabinet (at registration, and again on an
//! explicit rotation) and one per courier that listens for its notifications over MQTT.
//!
//! The secret is 192 random bits, shown once in the API response; the database keeps only
//! `HMAC-SHA256(credential key, secret)` (and, for operators on Mosquitto, the same secret in
//! Mosquitto's own PBKDF2 format — see [`mosquitto_password_file`]).
//!
//! Why a fast keyed hash and not argon2 (which pickup codes use, see `shared/src/codes.rs`):
//! a pickup code has ~27 bits, so its hash must be slow to survive an offline guess; an
//! MQTT secret has 192 bits, which no amount of guessing reaches, however fast the hash.
//! And logins are on the hot path: after a broker restart 10,000 cabinets reconnect at
//! ~400/s, where argon2's ~60 ms × 19 MiB per check would need 24 cores and 7 GiB. An HMAC
//! takes about a microsecond. The key (the "pepper") is kept apart from the rows
//! (`mqtt.credential_key`, else a server secret), so a copy of the table alone does not
//! even let anyone test a guess.
//!
//! The front door checks logins against an in-memory copy of the table ([`Credentials`]),
//! loaded at start and updated by every issue in this process (the embedded broker runs in
//! one process), so a connect never waits for the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use lockerfleet_shared::{CabinetId, CourierId};
use sea_orm::{EntityTrait, QueryOrder, Set};
use sha2::{Sha256, Sha512};

use crate::store::entities::mqtt_credential;
use crate::store::{Store, StoreError};

type HmacSha256 = Hmac<Sha256>;

/// Usernames of couriers start with this; cabinet ids cannot contain `@`, so a courier
/// and a cabinet with the same id never share a login. (Not `:`: Mosquitto's password
/// file ends the username at the first colon.)
pub const COURIER_PREFIX: &str = "courier@";

/// Random bytes in a secret (192 bits).
const SECRET_BYTES: usize = 24;

/// Mosquitto's own password-file parameters (`mosquitto_passwd` 2.x): PBKDF2-SHA512,
/// 101 rounds, 12-byte salt, 64-byte hash.
const MOSQUITTO_ROUNDS: u32 = 101;

/// Who an MQTT login belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Cabinet(CabinetId),
    Courier(CourierId),
}

impl Principal {
    /// The MQTT username: the cabinet id (as the shipped Mosquitto ACL expects), or
    /// `courier@{id}`.
    pub fn username(&self) -> String {
        match self {
            Principal::Cabinet(c) => c.to_string(),
            Principal::Courier(k) => format!("{COURIER_PREFIX}{k}"),
        }
    }

    /// The principal a username names, if it is well formed.
    pub fn from_username(username: &str) -> Option<Self> {
        match username.strip_prefix(COURIER_PREFIX) {
            Some(courier) => CourierId::new(courier).ok().map(Principal::Courier),
            None => CabinetId::new(username).ok().map(Principal::Cabinet),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Principal::Cabinet(_) => "cabinet",
            Principal::Courier(_) => "courier",
        }
    }

    fn subject(&self) -> &str {
        match self {
            Principal::Cabinet(c) => c.as_str(),
            Principal::Courier(k) => k.as_str(),
        }
    }
}

/// Why a login was refused; the label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the username names no cabinet or courier with MQTT credentials")]
    UnknownUser,
    #[error("the password does not match")]
    WrongPassword,
}

impl LoginError {
    pub fn label(self) -> &'static str {
        match self {
            LoginError::UnknownUser => "unknown_user",
            LoginError::WrongPassword => "wrong_password",
        }
    }
}

/// A login as handed out once by the API.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedCredential {
    /// The MQTT username: the cabinet id, or `courier@{id}`.
    pub username: String,
    /// The secret; shown only in this response, stored only hashed. Put it in the
    /// cabinet's `[mqtt] password_file`.
    pub password: String,
}

/// The issued logins, checked in memory; cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    /// The HMAC key the secrets are hashed under.
    key: zeroize::Zeroizing<Vec<u8>>,
    /// Username → HMAC of its current secret.
    known: RwLock<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("logins", &self.len()).finish_non_exhaustive()
    }
}

/// Decodes a configured credential key: 32 bytes, base64.
pub fn parse_key(b64: &str) -> Result<Vec<u8>, String> {
    let key = STANDARD.decode(b64.trim()).map_err(|e| format!("is not base64: {e}"))?;
    if key.len() != 32 {
        return Err(format!("must be 32 bytes, base64 (got {})", key.len()));
    }
    Ok(key)
}

impl Credentials {
    /// Loads every issued login. The key is `configured` (validated), else a server secret
    /// made on first start and shared through the database.
    pub async fn load(store: &Store, configured: Option<&str>) -> Result<Self, StoreError> {
        let key = match configured {
            Some(k) => parse_key(k).map_err(|e| StoreError::Missing { what: "valid mqtt.credential_key", id: e })?,
            None => {
                let b64 = store
                    .server_secret("mqtt_credential_key", || {
                        let mut k = [0u8; 32];
                        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
                        STANDARD.encode(k)
                    })
                    .await?;
                parse_key(&b64).map_err(|e| StoreError::Missing { what: "valid MQTT credential key", id: e })?
            }
        };
        let rows = mqtt_credential::Entity::find()
            .order_by_asc(mqtt_credential::Column::Username)
            .all(store.connection())
            .await?;
        let mut known = HashMap::with_capacity(rows.len());
        for row in rows {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&row.secret_hash, &mut hash).is_ok() {
                known.insert(row.username, hash);
            } else {
                tracing::error!(username = %row.username, "stored MQTT credential hash is malformed; that login is refused");
            }
        }
        Ok(Self { inner: Arc::new(Inner { key: zeroize::Zeroizing::new(key), known: RwLock::new(known) }) })
    }

    fn mac(&self, secret: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.inner.key).expect("HMAC takes a key of any length");
        mac.update(secret);
        mac
    }

    /// How many logins are known.
    pub fn len(&self) -> usize {
        self.inner.known.read().map(|k| k.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a login; the comparison takes the same time whatever the password.
    pub fn verify(&self, username: &str, password: &[u8]) -> Result<Principal, LoginError> {
        let principal = Principal::from_username(username).ok_or(LoginError::UnknownUser)?;
        let stored = {
            let known = self.inner.known.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            *known.get(username).ok_or(LoginError::UnknownUser)?
        };
        self.mac(password).verify_slice(&stored).map_err(|_| LoginError::WrongPassword)?;
        Ok(principal)
    }

    /// Issues a new secret for `principal`, replacing (and so invalidating) any earlier one.
    pub async fn issue(&self, store: &Store, principal: &Principal) -> Result<IssuedCredential, StoreError> {
        let mut bytes = zeroize::Zeroizing::new([0u8; SECRET_BYTES]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
        let password = format!("lfm_{}", URL_SAFE_NO_PAD.encode(bytes.as_ref()));
        let hash: [u8; 32] = self.mac(password.as_bytes()).finalize().into_bytes().into();
        let username = principal.username();
        let row = mqtt_credential::ActiveModel {
            username: Set(username.clone()),
            kind: Set(principal.kind().to_owned()),
            subject: Set(principal.subject().to_owned()),
            secret_hash: Set(hex::encode(hash)),
            mosquitto_hash: Set(Some(mosquitto_hash(&password, &random_salt()))),
            issued_at: Set(crate::store::now()),
        };
        mqtt_credential::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(mqtt_credential::Column::Username)
                    .update_columns([
                        mqtt_credential::Column::SecretHash,
                        mqtt_credential::Column::MosquittoHash,
                        mqtt_credential::Column::IssuedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(store.connection())
            .await?;
        self.inner.known.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(username.clone(), hash);
        tracing::info!(%username, "MQTT credentials issued");
        Ok(IssuedCredential { username, password })
    }
}

fn random_salt() -> [u8; 12] {
    let mut salt = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    salt
}

/// `password` in Mosquitto's password-file hash format (`$7$rounds$salt$hash`).
pub fn mosquitto_hash(password: &str, salt: &[u8]) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, MOSQUITTO_ROUNDS, &mut out);
    // mosquitto_passwd writes padded base64.
    format!("$7${MOSQUITTO_ROUNDS}${}${}", STANDARD.encode(salt), STANDARD.encode(out))
}

/// Every issued login as lines of a Mosquitto `password_file` (`username:hash`), for
/// `fleet-server mqtt-passwd`. The server's own login is not among them: add it with
/// `mosquitto_passwd`.
pub async fn mosquitto_password_file(store: &Store) -> Result<String, StoreError> {
    let rows =
        mqtt_credential::Entity::find().order_by_asc(mqtt_credential::Column::Username).all(store.connection()).await?;
    Ok(rows.into_iter().filter_map(|r| r.mosquitto_hash.map(|h| format!("{}:{h}\n", r.username))).collect())
}

/// ACL entries for a Mosquitto `acl_file`, one per issued courier login: read its own
/// assignment topic and nothing else (cabinets are covered by the shipped file's
/// `pattern` lines; a courier's username is not its topic segment, so it needs its own
/// entry). Append to `deploy/mosquitto/lockerfleet.acl`; `fleet-server mqtt-passwd --acl`.
pub async fn mosquitto_courier_acl(
    store: &Store,
    topics: &lockerfleet_shared::TopicSpace,
) -> Result<String, StoreError> {
    let rows =
        mqtt_credential::Entity::find().order_by_asc(mqtt_credential::Column::Username).all(store.connection()).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match Principal::from_username(&r.username) {
            Some(Principal::Courier(k)) => {
                Some(format!("user {}\ntopic read {}\n\n", r.username, topics.courier_assignments(&k)))
            }
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_name_cabinets_and_couriers_apart() {
        let cab = Principal::Cabinet(CabinetId::new("k-1").unwrap());
        let courier = Principal::Courier(CourierId::new("k-1").unwrap());
        assert_eq!(cab.username(), "k-1");
        assert_eq!(courier.username(), "courier@k-1");
        assert_eq!(Principal::from_username("k-1"), Some(cab));
        assert_eq!(Principal::from_username("courier@k-1"), Some(courier));
        assert_eq!(Principal::from_username("courier@"), None);
        assert_eq!(Principal::from_username("lf/v1/#"), None);
    }

    #[test]
    fn mosquitto_hashes_match_mosquitto_passwd() {
        // A line `mosquitto_passwd -b file u secret` wrote (Mosquitto 2.0.11).
        let line = "$7$101$FQ9v15oSdOXZ6Omn$2fqaVi2yCncD+Ub0k1kVLP4InlQRYbz/IxzsdR62DdfNt+F0v6FC52Fdw5EuAn8pvM/OcXLJbPMm5PTUH0Lt9w==";
        let salt = STANDARD.decode("FQ9v15oSdOXZ6Omn").unwrap();
        assert_eq!(mosquitto_hash("secret", &salt), line);
        assert_ne!(mosquitto_hash("secreT", &salt), line);
    }

    #[test]
    fn a_configured_key_must_be_32_bytes() {
        assert!(parse_key(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(parse_key(&STANDARD.encode([7u8; 16])).unwrap_err().contains("32 bytes"));
        assert!(parse_key("***").unwrap_err().contains("base64"));
    }
}
