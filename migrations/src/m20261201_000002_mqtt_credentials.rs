//! MQTT logins issued by the server: one row per cabinet (and per courier that listens
//! over MQTT), holding only keyed hashes of the secret — see `fleet-server/src/gateway/credentials.rs`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum MqttCredentials {
    Table,
    Username,
    Kind,
    Subject,
    SecretHash,
    MosquittoHash,
    IssuedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(MqttCredentials::Table)
                .col(string_len(MqttCredentials::Username, 80).primary_key())
                .col(string_len(MqttCredentials::Kind, 16))
                .col(string_len(MqttCredentials::Subject, 64))
                .col(string_len(MqttCredentials::SecretHash, 64))
                .col(text_null(MqttCredentials::MosquittoHash))
                .col(timestamp_with_time_zone(MqttCredentials::IssuedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(MqttCredentials::Table).to_owned()).await
    }
}
