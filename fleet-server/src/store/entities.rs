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
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
