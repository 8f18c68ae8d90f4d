//! OTA artifacts: a signed manifest per release, the file kept on disk by its sha256.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Artifacts {
    Table,
    Id,
    Name,
    Version,
    Sha256,
    Size,
    Manifest,
    Uploaded,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Artifacts::Table)
                .col(uuid(Artifacts::Id).primary_key())
                .col(string_len(Artifacts::Name, 100))
                .col(string_len(Artifacts::Version, 64))
                .col(string_len(Artifacts::Sha256, 64).unique_key())
                .col(big_integer(Artifacts::Size))
                .col(text(Artifacts::Manifest))
                .col(boolean(Artifacts::Uploaded))
                .col(timestamp_with_time_zone(Artifacts::CreatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Artifacts::Table).to_owned()).await
    }
}
