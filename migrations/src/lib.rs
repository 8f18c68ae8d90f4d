//! The Lockerfleet schema as sea-orm migrations, written once for SQLite and PostgreSQL.
//!
//! The fleet-server applies these at start ([`Migrator::up`]); each migration is a file
//! named after its date and what it adds, and none is ever edited after it has shipped.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_fleet;
mod m20261125_000002_pickup_flow;
mod m20261125_000003_server_secrets;
mod m20261125_000004_cabinet_settings;
mod m20261125_000005_artifacts;
mod m20261125_000006_rollouts;
mod m20261125_000007_cabinet_tags;
mod m20261125_000008_cabinet_sessions;
mod m20261201_000001_alarm_acks;
mod m20261201_000002_mqtt_credentials;
mod m20261204_000001_presence_changes;

/// All migrations, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_fleet::Migration),
            Box::new(m20261125_000002_pickup_flow::Migration),
            Box::new(m20261125_000003_server_secrets::Migration),
            Box::new(m20261125_000004_cabinet_settings::Migration),
            Box::new(m20261125_000005_artifacts::Migration),
            Box::new(m20261125_000006_rollouts::Migration),
            Box::new(m20261125_000007_cabinet_tags::Migration),
            Box::new(m20261125_000008_cabinet_sessions::Migration),
            Box::new(m20261201_000001_alarm_acks::Migration),
            Box::new(m20261201_000002_mqtt_credentials::Migration),
            Box::new(m20261204_000001_presence_changes::Migration),
        ]
    }
}
