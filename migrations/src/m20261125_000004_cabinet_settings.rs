//! Remote settings an operator sets per cabinet (door timings, lockout policy), sent to
//! the cabinet with its desired state.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Cabinets {
    Table,
    Settings,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Cabinets::Table).add_column(text_null(Cabinets::Settings)).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Cabinets::Table).drop_column(Cabinets::Settings).to_owned()).await
    }
}
