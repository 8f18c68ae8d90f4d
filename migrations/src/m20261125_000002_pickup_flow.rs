//! Couriers, recipients, parcels and their timeline, cabinet events (ingest), the
//! transactional outbox, API tokens, and each cabinet's desired-state versions.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    PickupWindowHours,
    ExtensionHours,
    ReservationHours,
    Custody,
    WebhookUrl,
    WebhookSecret,
}

#[derive(DeriveIden)]
enum Cabinets {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Compartments {
    Table,
    ParcelId,
    ReservedUntil,
}

#[derive(DeriveIden)]
enum Couriers {
    Table,
    Id,
    TenantId,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Recipients {
    Table,
    Id,
    TenantId,
    Reference,
    Custody,
    ConsentAt,
    TemplateCiphertext,
    TemplateModelId,
    TemplateModelSha256,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Parcels {
    Table,
    Id,
    TenantId,
    Reference,
    RecipientId,
    CourierId,
    State,
    Size,
    NeedLow,
    CabinetId,
    CompartmentId,
    Deadline,
    Extended,
    CodeHash,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ParcelEvents {
    Table,
    Id,
    ParcelId,
    At,
    Kind,
    FromState,
    ToState,
    Source,
    Detail,
}

#[derive(DeriveIden)]
enum CabinetEvents {
    Table,
    Id,
    CabinetId,
    Seq,
    At,
    Kind,
    Body,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    TenantId,
    Channel,
    Target,
    Payload,
    CreatedAt,
    Attempts,
    NextAttemptAt,
    DeliveredAt,
    LastError,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    TokenHash,
    Name,
    Role,
    TenantId,
    CourierId,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum SealedTemplates {
    Table,
    ParcelId,
    CabinetId,
    Blob,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CabinetDesired {
    Table,
    CabinetId,
    TemplatesVersion,
    ParcelsVersion,
    TemplatesApplied,
    ParcelsApplied,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Per-tenant rules (one statement per column: SQLite alters one at a time).
        for col in [
            integer(Tenants::PickupWindowHours).default(48).to_owned(),
            integer(Tenants::ExtensionHours).default(24).to_owned(),
            integer(Tenants::ReservationHours).default(24).to_owned(),
            string_len(Tenants::Custody, 16).default("recipient").to_owned(),
            string_len_null(Tenants::WebhookUrl, 500).to_owned(),
            string_len_null(Tenants::WebhookSecret, 200).to_owned(),
        ] {
            m.alter_table(Table::alter().table(Tenants::Table).add_column(col).to_owned()).await?;
        }
        // Occupancy lives on the compartment: claiming one is a conditional update of this
        // column (`WHERE parcel_id IS NULL`), which two replicas can never both win.
        for col in [
            uuid_null(Compartments::ParcelId).to_owned(),
            timestamp_with_time_zone_null(Compartments::ReservedUntil).to_owned(),
        ] {
            m.alter_table(Table::alter().table(Compartments::Table).add_column(col).to_owned()).await?;
        }

        m.create_table(
            Table::create()
                .table(Couriers::Table)
                .col(string_len(Couriers::Id, 64).primary_key())
                .col(string_len(Couriers::TenantId, 64))
                .col(string_len(Couriers::Name, 200))
                .col(timestamp_with_time_zone(Couriers::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Recipients::Table)
                .col(uuid(Recipients::Id).primary_key())
                .col(string_len(Recipients::TenantId, 64))
                .col(string_len(Recipients::Reference, 200))
                .col(string_len(Recipients::Custody, 16))
                .col(timestamp_with_time_zone_null(Recipients::ConsentAt))
                .col(text_null(Recipients::TemplateCiphertext))
                .col(string_len_null(Recipients::TemplateModelId, 100))
                .col(string_len_null(Recipients::TemplateModelSha256, 64))
                .col(timestamp_with_time_zone(Recipients::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_recipients_reference")
                .table(Recipients::Table)
                .col(Recipients::TenantId)
                .col(Recipients::Reference)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Parcels::Table)
                .col(uuid(Parcels::Id).primary_key())
                .col(string_len(Parcels::TenantId, 64))
                .col(string_len(Parcels::Reference, 200))
                .col(uuid_null(Parcels::RecipientId))
                .col(string_len_null(Parcels::CourierId, 64))
                .col(string_len(Parcels::State, 16))
                .col(string_len(Parcels::Size, 8))
                .col(boolean(Parcels::NeedLow).default(false))
                .col(string_len_null(Parcels::CabinetId, 64))
                .col(string_len_null(Parcels::CompartmentId, 64))
                .col(timestamp_with_time_zone_null(Parcels::Deadline))
                .col(boolean(Parcels::Extended).default(false))
                .col(string_len_null(Parcels::CodeHash, 200))
                .col(timestamp_with_time_zone(Parcels::CreatedAt))
                .col(timestamp_with_time_zone(Parcels::UpdatedAt))
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("ix_parcels_tenant_state", vec![Parcels::TenantId, Parcels::State, Parcels::Id]),
            ("ix_parcels_cabinet", vec![Parcels::CabinetId, Parcels::State]),
            ("ix_parcels_deadline", vec![Parcels::State, Parcels::Deadline]),
        ] {
            let mut idx = Index::create().name(name).table(Parcels::Table).to_owned();
            for c in cols {
                idx.col(c);
            }
            m.create_index(idx).await?;
        }

        m.create_table(
            Table::create()
                .table(ParcelEvents::Table)
                .col(uuid(ParcelEvents::Id).primary_key())
                .col(uuid(ParcelEvents::ParcelId))
                .col(timestamp_with_time_zone(ParcelEvents::At))
                .col(string_len(ParcelEvents::Kind, 32))
                .col(string_len_null(ParcelEvents::FromState, 16))
                .col(string_len(ParcelEvents::ToState, 16))
                .col(string_len(ParcelEvents::Source, 16))
                .col(text(ParcelEvents::Detail))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_parcel_events_parcel")
                .table(ParcelEvents::Table)
                .col(ParcelEvents::ParcelId)
                .col(ParcelEvents::Id)
                .to_owned(),
        )
        .await?;

        // The id is the cabinet's event id: the primary key makes ingest idempotent.
        m.create_table(
            Table::create()
                .table(CabinetEvents::Table)
                .col(uuid(CabinetEvents::Id).primary_key())
                .col(string_len(CabinetEvents::CabinetId, 64))
                .col(big_integer(CabinetEvents::Seq))
                .col(timestamp_with_time_zone(CabinetEvents::At))
                .col(string_len(CabinetEvents::Kind, 32))
                .col(text(CabinetEvents::Body))
                .col(timestamp_with_time_zone(CabinetEvents::ReceivedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_cabinet_events_cabinet_seq")
                .table(CabinetEvents::Table)
                .col(CabinetEvents::CabinetId)
                .col(CabinetEvents::Seq)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .col(big_pk_auto(Outbox::Id))
                .col(string_len(Outbox::TenantId, 64))
                .col(string_len(Outbox::Channel, 16))
                .col(string_len(Outbox::Target, 500))
                .col(text(Outbox::Payload))
                .col(timestamp_with_time_zone(Outbox::CreatedAt))
                .col(integer(Outbox::Attempts).default(0))
                .col(timestamp_with_time_zone(Outbox::NextAttemptAt))
                .col(timestamp_with_time_zone_null(Outbox::DeliveredAt))
                .col(text_null(Outbox::LastError))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_outbox_pending")
                .table(Outbox::Table)
                .col(Outbox::DeliveredAt)
                .col(Outbox::NextAttemptAt)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ApiTokens::Table)
                .col(uuid(ApiTokens::Id).primary_key())
                .col(string_len_uniq(ApiTokens::TokenHash, 64))
                .col(string_len(ApiTokens::Name, 200))
                .col(string_len(ApiTokens::Role, 16))
                .col(string_len_null(ApiTokens::TenantId, 64))
                .col(string_len_null(ApiTokens::CourierId, 64))
                .col(timestamp_with_time_zone(ApiTokens::CreatedAt))
                .col(timestamp_with_time_zone_null(ApiTokens::ExpiresAt))
                .col(timestamp_with_time_zone_null(ApiTokens::RevokedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(SealedTemplates::Table)
                .col(uuid(SealedTemplates::ParcelId).primary_key())
                .col(string_len(SealedTemplates::CabinetId, 64))
                .col(text(SealedTemplates::Blob))
                .col(timestamp_with_time_zone(SealedTemplates::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_sealed_templates_cabinet")
                .table(SealedTemplates::Table)
                .col(SealedTemplates::CabinetId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(CabinetDesired::Table)
                .col(string_len(CabinetDesired::CabinetId, 64).primary_key())
                .col(big_integer(CabinetDesired::TemplatesVersion).default(0))
                .col(big_integer(CabinetDesired::ParcelsVersion).default(0))
                .col(big_integer(CabinetDesired::TemplatesApplied).default(0))
                .col(big_integer(CabinetDesired::ParcelsApplied).default(0))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_cabinet_desired_cabinet")
                        .from(CabinetDesired::Table, CabinetDesired::CabinetId)
                        .to(Cabinets::Table, Cabinets::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            CabinetDesired::Table.into_iden(),
            SealedTemplates::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Outbox::Table.into_iden(),
            CabinetEvents::Table.into_iden(),
            ParcelEvents::Table.into_iden(),
            Parcels::Table.into_iden(),
            Recipients::Table.into_iden(),
            Couriers::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        for c in [Compartments::ReservedUntil.into_iden(), Compartments::ParcelId.into_iden()] {
            m.alter_table(Table::alter().table(Compartments::Table).drop_column(c).to_owned()).await?;
        }
        for c in [
            Tenants::WebhookSecret.into_iden(),
            Tenants::WebhookUrl.into_iden(),
            Tenants::Custody.into_iden(),
            Tenants::ReservationHours.into_iden(),
            Tenants::ExtensionHours.into_iden(),
            Tenants::PickupWindowHours.into_iden(),
        ] {
            m.alter_table(Table::alter().table(Tenants::Table).drop_column(c).to_owned()).await?;
        }
        Ok(())
    }
}
