//! The OpenAPI document, generated from the handlers' and types' annotations and served
//! at `/api/v1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{alarms, artifacts, auth, cabinets, error, fleet, health, live, parcels, rollouts};

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an API token (`lf_…`) made with POST /api/v1/tokens"))
                    .build(),
            ),
        );
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Lockerfleet fleet-server API", description = "Cabinets, parcels, couriers, recipients and templates of a Lockerfleet deployment."),
    modifiers(&BearerAuth),
    paths(
        health::healthz, health::readyz, health::metrics,
        auth::create_token, auth::revoke_token,
        cabinets::create_tenant, cabinets::register, cabinets::get, cabinets::list, cabinets::events, cabinets::put_settings, cabinets::put_tags, cabinets::mqtt_credentials,
        artifacts::register, artifacts::upload, artifacts::list, artifacts::get,
        rollouts::create, rollouts::list, rollouts::get, rollouts::cabinets, rollouts::command,
        parcels::update_tenant, parcels::create_courier, parcels::list_couriers, parcels::courier_stream, parcels::courier_pass, parcels::courier_mqtt_credentials,
        parcels::create_recipient, parcels::erase_recipient, parcels::enrol_template,
        parcels::create_parcel, parcels::list_parcels, parcels::get_parcel, parcels::parcel_timeline,
        parcels::cancel_parcel, parcels::extend_parcel, parcels::upload_sealed_template, parcels::ready_notice,
        auth::me, fleet::summary, live::stream, alarms::list, alarms::acknowledge,
        cabinets::compartments, cabinets::open_compartment, parcels::courier_tasks,
    ),
    components(schemas(error::ErrorEnvelope, error::ErrorBody))
)]
pub struct ApiDoc;

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
