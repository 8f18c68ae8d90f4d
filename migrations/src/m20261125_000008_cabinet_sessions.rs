//! Every MQTT session a cabinet starts: how often it reconnects is part of its health
//! (a cabinet that keeps restarting after an update looks fine in any one heartbeat).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CabinetSessions {
    Table,
    Session,
    CabinetId,
    StartedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(CabinetSessions::Table)
                .col(uuid(CabinetSessions::Session).primary_key())
                .col(string_len(CabinetSessions::CabinetId, 64))
                .col(timestamp_with_time_zone(CabinetSessions::StartedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_cabinet_sessions_cabinet_started")
                .table(CabinetSessions::Table)
                .col(CabinetSessions::CabinetId)
                .col(CabinetSessions::StartedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(CabinetSessions::Table).to_owned()).await
    }
}
