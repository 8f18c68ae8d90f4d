//! The recipient side: what a phone app (or a CLI) needs to hand a face template to the
//! one cabinet holding the recipient's parcel, without the server ever seeing it.
//!
//! ```text
//!   server ──"parcel ready" (cabinet id, cabinet public key, parcel, deadline)──► app
//!   app: template (kept on the phone) ─► seal_for_parcel ─► SealedTemplate ─► server
//!   server: relays ciphertext only ─► cabinet: opens with its private key
//! ```

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CabinetId, ParcelId};
use crate::seal::{self, CabinetPublicKey, FaceTemplate, ModelRef, SealError, SealedTemplate, TemplateBinding};

/// What the recipient's app learns when a parcel is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyNotice {
    pub parcel: ParcelId,
    pub cabinet: CabinetId,
    pub cabinet_public_key: CabinetPublicKey,
    /// Pickup deadline; the sealed template expires a little after it.
    pub deadline: DateTime<Utc>,
}

/// How long after the pickup deadline a sealed template stays valid: covers the one
/// extension a recipient may ask for.
pub const TEMPLATE_GRACE: Duration = Duration::hours(48);

/// Why the app could not seal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdkError {
    #[error("the parcel's pickup deadline ({0}) has passed")]
    DeadlinePassed(DateTime<Utc>),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Seals the recipient's template for the cabinet named in `notice`, bound to that
/// parcel, to the embedding model that made the template, and to an expiry just after
/// the pickup window.
pub fn seal_for_parcel(
    notice: &ReadyNotice,
    template: &FaceTemplate,
    model: &ModelRef,
    now: DateTime<Utc>,
) -> Result<SealedTemplate, SdkError> {
    if notice.deadline <= now {
        return Err(SdkError::DeadlinePassed(notice.deadline));
    }
    let binding = TemplateBinding {
        cabinet: notice.cabinet.clone(),
        parcel: notice.parcel,
        expires_at: notice.deadline + TEMPLATE_GRACE,
        model: model.clone(),
    };
    Ok(seal::seal(&notice.cabinet_public_key, binding, template)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{CabinetKeyPair, OpenPolicy};

    #[test]
    fn a_template_sealed_by_the_app_opens_only_at_its_cabinet() {
        let keys = CabinetKeyPair::generate();
        let cabinet = CabinetId::new("cab-9").unwrap();
        let model = ModelRef { id: "fr".into(), sha256: "00".repeat(32) };
        let notice = ReadyNotice {
            parcel: ParcelId::generate(),
            cabinet: cabinet.clone(),
            cabinet_public_key: keys.public(),
            deadline: Utc::now() + Duration::hours(48),
        };
        let t = FaceTemplate::new(vec![0.25; 512]);
        let sealed = seal_for_parcel(&notice, &t, &model, Utc::now()).unwrap();
        assert_eq!(sealed.binding.parcel, notice.parcel);
        assert_eq!(sealed.binding.expires_at, notice.deadline + TEMPLATE_GRACE);
        let policy = OpenPolicy { cabinet: &cabinet, model: &model, now: Utc::now() };
        assert_eq!(seal::open(&keys, &sealed, &policy).unwrap(), t);
        assert!(seal::open(&CabinetKeyPair::generate(), &sealed, &policy).is_err());
    }

    #[test]
    fn a_late_app_cannot_seal() {
        let notice = ReadyNotice {
            parcel: ParcelId::generate(),
            cabinet: CabinetId::new("cab-9").unwrap(),
            cabinet_public_key: CabinetKeyPair::generate().public(),
            deadline: Utc::now() - Duration::minutes(1),
        };
        let model = ModelRef { id: "fr".into(), sha256: "00".repeat(32) };
        let err = seal_for_parcel(&notice, &FaceTemplate::new(vec![1.0]), &model, Utc::now()).unwrap_err();
        assert!(matches!(err, SdkError::DeadlinePassed(_)));
    }
}
