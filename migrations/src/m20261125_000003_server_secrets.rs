//! Secrets the server makes for itself (the courier-pass signing key), shared by every
//! replica through the database unless the configuration provides them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ServerSecrets {
    Table,
    Name,
    Value,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ServerSecrets::Table)
                .col(string_len(ServerSecrets::Name, 64).primary_key())
                .col(text(ServerSecrets::Value))
                .col(timestamp_with_time_zone(ServerSecrets::CreatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ServerSecrets::Table).to_owned()).await
    }
}
