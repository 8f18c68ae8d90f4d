//! When each cabinet's online state last changed in the database. Several replicas share
//! the cabinets' presence messages (one shared subscription), so no replica sees every
//! transition; the console's live feed reads them from here instead.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Cabinets {
    Table,
    PresenceChangedAt,
}

const INDEX: &str = "ix_cabinets_presence_changed_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Cabinets::Table)
                .add_column(timestamp_with_time_zone_null(Cabinets::PresenceChangedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name(INDEX).table(Cabinets::Table).col(Cabinets::PresenceChangedAt).to_owned())
            .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name(INDEX).table(Cabinets::Table).to_owned()).await?;
        m.alter_table(Table::alter().table(Cabinets::Table).drop_column(Cabinets::PresenceChangedAt).to_owned()).await
    }
}
