//! sea-orm entities, one module per table (see `migrations/` for the schema).

pub mod tenant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub created_at: DateTimeUtc,
        pub pickup_window_hours: i32,
        pub extension_hours: i32,
        pub reservation_hours: i32,
        /// `recipient` (templates sealed on the recipient's phone) or `operator`.
        pub custody: String,
        pub webhook_url: Option<String>,
        pub webhook_secret: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cabinet {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "cabinets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant_id: String,
        pub name: String,
        /// X25519 template key, base64.
        pub public_key: String,
        pub key_fingerprint: String,
        /// IANA zone of the cabinet, for maintenance windows.
        pub timezone: String,
        pub latitude: Option<f64>,
        pub longitude: Option<f64>,
        pub firmware: Option<String>,
        pub hardware: Option<String>,
        pub slot: Option<String>,
        pub online: bool,
        /// The MQTT session (UUIDv7) that last came online.
        pub session: Option<Uuid>,
        pub last_seen_at: Option<DateTimeUtc>,
        pub registered_at: DateTimeUtc,
        /// The operator's remote settings (JSON `CabinetSettings`), if any were set.
        pub settings: Option<String>,
        /// Tags, a JSON list of strings.
        pub tags: Option<String>,
        /// When `online` last changed (the live feed's source for presence).
        pub presence_changed_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod compartment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "compartments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub cabinet_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub size: String,
        pub low: bool,
        /// The parcel holding (or reserved into) this compartment.
        pub parcel_id: Option<Uuid>,
        pub reserved_until: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod courier {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "couriers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant_id: String,
        pub name: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod recipient {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "recipients")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: String,
        /// The operator's own reference for the person (no names or addresses here).
        pub reference: String,
        pub custody: String,
        pub consent_at: Option<DateTimeUtc>,
        /// Operator-held custody only: the template encrypted under the key-encryption key.
        pub template_ciphertext: Option<String>,
        pub template_model_id: Option<String>,
        pub template_model_sha256: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod parcel {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parcels")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: String,
        /// The sender's tracking reference.
        pub reference: String,
        pub recipient_id: Option<Uuid>,
        pub courier_id: Option<String>,
        pub state: String,
        pub size: String,
        pub need_low: bool,
        pub cabinet_id: Option<String>,
        pub compartment_id: Option<String>,
        pub deadline: Option<DateTimeUtc>,
        pub extended: bool,
        /// PHC string of the pickup code's slow hash.
        pub code_hash: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod parcel_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parcel_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub parcel_id: Uuid,
        pub at: DateTimeUtc,
        pub kind: String,
        pub from_state: Option<String>,
        pub to_state: String,
        /// `api`, `cabinet` or `timer`.
        pub source: String,
        /// JSON with what else is worth knowing (who, where).
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cabinet_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cabinet_events")]
    pub struct Model {
        /// The cabinet's own event id: storing it twice is impossible.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub cabinet_id: String,
        pub seq: i64,
        pub at: DateTimeUtc,
        pub kind: String,
        pub body: String,
        pub received_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub tenant_id: String,
        /// `mqtt` (target is a topic) or `webhook` (target is a URL).
        pub channel: String,
        pub target: String,
        pub payload: String,
        pub created_at: DateTimeUtc,
        pub attempts: i32,
        pub next_attempt_at: DateTimeUtc,
        pub delivered_at: Option<DateTimeUtc>,
        pub last_error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Hex sha256 of the secret; the secret itself is shown once and never stored.
        pub token_hash: String,
        pub name: String,
        pub role: String,
        /// `None` only for fleet-wide admins.
        pub tenant_id: Option<String>,
        /// For the courier role: whose assignments the token may see.
        pub courier_id: Option<String>,
        pub created_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sealed_template {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sealed_templates")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub parcel_id: Uuid,
        pub cabinet_id: String,
        /// `SealedTemplate` JSON: ciphertext only this cabinet can open.
        pub blob: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cabinet_desired {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cabinet_desired")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub cabinet_id: String,
        pub templates_version: i64,
        pub parcels_version: i64,
        pub templates_applied: i64,
        pub parcels_applied: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod server_secret {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "server_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub value: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod mqtt_credential {
    use sea_orm::entity::prelude::*;

    /// One issued MQTT login: only keyed hashes of its secret are kept.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mqtt_credentials")]
    pub struct Model {
        /// The MQTT username: a cabinet id, or `courier@{id}`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub username: String,
        /// `cabinet` or `courier`.
        pub kind: String,
        /// The cabinet or courier id.
        pub subject: String,
        /// HMAC-SHA256 of the secret under the server's credential key, hex.
        pub secret_hash: String,
        /// The same secret in Mosquitto's password-file format (PBKDF2-SHA512), for
        /// `fleet-server mqtt-passwd`.
        pub mosquitto_hash: Option<String>,
        pub issued_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod artifact {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "artifacts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub version: String,
        pub sha256: String,
        pub size: i64,
        /// The signed manifest, JSON.
        pub manifest: String,
        /// The file is on disk and matches the manifest.
        pub uploaded: bool,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rollout {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rollouts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub artifact_id: Uuid,
        pub name: String,
        /// The target selection, JSON.
        pub target: String,
        /// The plan, JSON.
        pub plan: String,
        pub include_new: bool,
        /// `running`, `awaiting_approval`, `paused`, `aborted`, `completed`.
        pub phase: String,
        /// The conductor's whole state, JSON.
        pub snapshot: String,
        /// The replica conducting it, while its lease lasts.
        pub owner: Option<String>,
        pub lease_until: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rollout_input {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rollout_inputs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub rollout_id: Uuid,
        /// A conductor input, JSON.
        pub input: String,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cabinet_session {
    use sea_orm::entity::prelude::*;

    /// One MQTT session a cabinet started.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cabinet_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub session: Uuid,
        pub cabinet_id: String,
        pub started_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod alarm_ack {
    use sea_orm::entity::prelude::*;

    /// An operator's acknowledgement of one alarm (a `cabinet_events` row of kind `alarm`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "alarm_acks")]
    pub struct Model {
        /// The alarm's event id: an alarm is acknowledged at most once.
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: Uuid,
        pub cabinet_id: String,
        /// The API token that acknowledged it, and that token's name at the time.
        pub token_id: Uuid,
        pub token_name: String,
        pub note: Option<String>,
        pub acked_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
