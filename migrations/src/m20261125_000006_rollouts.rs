//! OTA rollouts: the plan, the conductor's stored state (so another replica can take
//! over), the lease of the replica that conducts it, and the inputs waiting for it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Rollouts {
    Table,
    Id,
    ArtifactId,
    Name,
    Target,
    Plan,
    IncludeNew,
    Phase,
    Snapshot,
    Owner,
    LeaseUntil,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RolloutInputs {
    Table,
    Id,
    RolloutId,
    Input,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Rollouts::Table)
                .col(uuid(Rollouts::Id).primary_key())
                .col(uuid(Rollouts::ArtifactId))
                .col(string_len(Rollouts::Name, 200))
                .col(text(Rollouts::Target))
                .col(text(Rollouts::Plan))
                .col(boolean(Rollouts::IncludeNew))
                .col(string_len(Rollouts::Phase, 32))
                .col(text(Rollouts::Snapshot))
                .col(string_len_null(Rollouts::Owner, 100))
                .col(timestamp_with_time_zone_null(Rollouts::LeaseUntil))
                .col(timestamp_with_time_zone(Rollouts::CreatedAt))
                .col(timestamp_with_time_zone(Rollouts::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(RolloutInputs::Table)
                .col(big_integer(RolloutInputs::Id).primary_key().auto_increment())
                .col(uuid(RolloutInputs::RolloutId))
                .col(text(RolloutInputs::Input))
                .col(timestamp_with_time_zone(RolloutInputs::At))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_rollout_inputs_rollout")
                .table(RolloutInputs::Table)
                .col(RolloutInputs::RolloutId)
                .col(RolloutInputs::Id)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(RolloutInputs::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Rollouts::Table).to_owned()).await
    }
}
