//! Tenants, cabinets and their compartments.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Cabinets {
    Table,
    Id,
    TenantId,
    Name,
    PublicKey,
    KeyFingerprint,
    Timezone,
    Latitude,
    Longitude,
    Firmware,
    Hardware,
    Slot,
    Online,
    Session,
    LastSeenAt,
    RegisteredAt,
}

#[derive(DeriveIden)]
enum Compartments {
    Table,
    CabinetId,
    Id,
    Size,
    Low,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(string_len(Tenants::Id, 64).primary_key())
                    .col(string_len(Tenants::Name, 200))
                    .col(timestamp_with_time_zone(Tenants::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Cabinets::Table)
                    .col(string_len(Cabinets::Id, 64).primary_key())
                    .col(string_len(Cabinets::TenantId, 64))
                    .col(string_len(Cabinets::Name, 200))
                    .col(string_len(Cabinets::PublicKey, 64))
                    .col(string_len(Cabinets::KeyFingerprint, 64))
                    .col(string_len(Cabinets::Timezone, 64))
                    .col(double_null(Cabinets::Latitude))
                    .col(double_null(Cabinets::Longitude))
                    .col(string_len_null(Cabinets::Firmware, 64))
                    .col(string_len_null(Cabinets::Hardware, 64))
                    .col(string_len_null(Cabinets::Slot, 8))
                    .col(boolean(Cabinets::Online).default(false))
                    .col(uuid_null(Cabinets::Session))
                    .col(timestamp_with_time_zone_null(Cabinets::LastSeenAt))
                    .col(timestamp_with_time_zone(Cabinets::RegisteredAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_cabinets_tenant")
                            .from(Cabinets::Table, Cabinets::TenantId)
                            .to(Tenants::Table, Tenants::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_cabinets_tenant")
                    .table(Cabinets::Table)
                    .col(Cabinets::TenantId)
                    .col(Cabinets::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Compartments::Table)
                    .col(string_len(Compartments::CabinetId, 64))
                    .col(string_len(Compartments::Id, 64))
                    .col(string_len(Compartments::Size, 8))
                    .col(boolean(Compartments::Low).default(false))
                    .primary_key(Index::create().col(Compartments::CabinetId).col(Compartments::Id))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_compartments_cabinet")
                            .from(Compartments::Table, Compartments::CabinetId)
                            .to(Cabinets::Table, Cabinets::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [Compartments::Table.into_iden(), Cabinets::Table.into_iden(), Tenants::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
