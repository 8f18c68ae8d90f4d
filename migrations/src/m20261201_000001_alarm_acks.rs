//! Acknowledged alarms: an operator answered an alarm a cabinet raised, with who and
//! when. The alarm itself stays in `cabinet_events` as the cabinet reported it; an alarm
//! with no row here is open. An index on `(kind, received_at)` lets the fleet-wide inbox
//! read the newest alarms without scanning every event, and one on `acked_at` lets the
//! live feed pick up new acknowledgements.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AlarmAcks {
    Table,
    EventId,
    CabinetId,
    TokenId,
    TokenName,
    Note,
    AckedAt,
}

#[derive(DeriveIden)]
enum CabinetEvents {
    Table,
    Kind,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(AlarmAcks::Table)
                .col(uuid(AlarmAcks::EventId).primary_key())
                .col(string_len(AlarmAcks::CabinetId, 64))
                .col(uuid(AlarmAcks::TokenId))
                .col(string_len(AlarmAcks::TokenName, 200))
                .col(text_null(AlarmAcks::Note))
                .col(timestamp_with_time_zone(AlarmAcks::AckedAt))
                .to_owned(),
        )
        .await?;
        // The live feed asks for acknowledgements newer than its watermark.
        m.create_index(
            Index::create().name("ix_alarm_acks_acked_at").table(AlarmAcks::Table).col(AlarmAcks::AckedAt).to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_cabinet_events_kind_received")
                .table(CabinetEvents::Table)
                .col(CabinetEvents::Kind)
                .col(CabinetEvents::ReceivedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ix_cabinet_events_kind_received").table(CabinetEvents::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(AlarmAcks::Table).to_owned()).await
    }
}
