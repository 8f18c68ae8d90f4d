//! Identifier newtypes.
//!
//! Ids that operators choose or that appear inside MQTT topics (cabinet, compartment,
//! courier, tenant) are short validated text: 1–64 characters of `A-Z a-z 0-9 - _ .`,
//! never starting with a dot or a dash. That rules out the MQTT wildcards `+` and `#`, the
//! level separator `/` and the `$` of system topics, so an id can never widen a
//! subscription or escape its topic. Ids the system mints (parcels, recipients) are UUIDs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest text id accepted anywhere in the system.
pub const MAX_TEXT_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is {len} characters long; the limit is {MAX_TEXT_ID_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} id {value:?} contains {bad:?}; only letters, digits, '-', '_' and '.' are allowed")]
    BadCharacter { kind: &'static str, value: String, bad: char },
    #[error("{kind} id {value:?} must start with a letter, a digit or '_'")]
    BadStart { kind: &'static str, value: String },
    #[error("{kind} id {value:?} is not a UUID")]
    NotUuid { kind: &'static str, value: String },
}

fn validate_text_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    let first = value.chars().next().ok_or(IdError::Empty { kind })?;
    if value.len() > MAX_TEXT_ID_LEN {
        return Err(IdError::TooLong { kind, len: value.len() });
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(IdError::BadCharacter { kind, value: value.to_owned(), bad });
    }
    if matches!(first, '-' | '.') {
        return Err(IdError::BadStart { kind, value: value.to_owned() });
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// What this id names, for error messages.
            pub const KIND: &'static str = $kind;

            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_text_id($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// What this id names, for error messages.
            pub const KIND: &'static str = $kind;

            /// A new, time-ordered id (UUIDv7).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError::NotUuid {
                    kind: $kind,
                    value: s.to_owned(),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

text_id!(
    /// A cabinet, as the operator names it (usually the serial printed on the housing).
    CabinetId,
    "cabinet"
);
text_id!(
    /// A compartment within one cabinet (for example `A03`); unique per cabinet only.
    CompartmentId,
    "compartment"
);
text_id!(
    /// A courier account.
    CourierId,
    "courier"
);
text_id!(
    /// A tenant: one logistics operator's slice of a shared deployment.
    TenantId,
    "tenant"
);
uuid_id!(
    /// A parcel, minted by the server when the parcel is created.
    ParcelId,
    "parcel"
);
uuid_id!(
    /// A recipient, minted by the server when the recipient is enrolled.
    RecipientId,
    "recipient"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards_and_separators_are_refused() {
        for bad in ["a/b", "a+", "#", "$SYS", "a b", "ä"] {
            assert!(matches!(CabinetId::new(bad), Err(IdError::BadCharacter { .. })), "{bad}");
        }
        assert_eq!(CabinetId::new(""), Err(IdError::Empty { kind: "cabinet" }));
        assert!(matches!(CabinetId::new("-x"), Err(IdError::BadStart { .. })));
        assert!(matches!(CabinetId::new("x".repeat(65)), Err(IdError::TooLong { len: 65, .. })));
        assert!(CabinetId::new("CAB-0001_b.2").is_ok());
    }

    #[test]
    fn deserialising_validates() {
        let err = serde_json::from_str::<CourierId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("courier id"), "{err}");
        let ok: CourierId = serde_json::from_str("\"c-1\"").unwrap();
        assert_eq!(ok.as_str(), "c-1");
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(s in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}") {
            let id = CabinetId::new(s.clone()).unwrap();
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<CabinetId>(&json).unwrap(), id);
            let parsed: CabinetId = s.parse().unwrap();
            prop_assert_eq!(parsed.as_str(), s.as_str());
        }
    }
}
