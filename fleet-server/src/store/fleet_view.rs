//! The operator's queries over the whole fleet: filtered pages of cabinets, counts by
//! state, region and firmware, and the alarm inbox. Each is one query (or one query and
//! one aggregate over narrow rows), so 10,000 cabinets cost milliseconds on the server
//! and never 10,000 rows on the wire.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, LikeExpr, Order, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::entities::{alarm_ack, cabinet, cabinet_event};
use super::{Store, StoreError};

/// Which cabinets a listing or a count covers. Every field narrows; none set is all.
#[derive(Debug, Clone, Default)]
pub struct CabinetFilter {
    pub tenant: Option<String>,
    /// `Some(true)` online only, `Some(false)` offline only.
    pub online: Option<bool>,
    /// A tag the cabinet carries (`region:berlin`, `indoor`).
    pub tag: Option<String>,
    /// Exact firmware version.
    pub firmware: Option<String>,
    /// Case-insensitive substring of the id or the name.
    pub text: Option<String>,
}

/// `%` and `_` are wildcards in LIKE; a search for them means the characters.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The value of the `region:…` tag in a stored tag list (`["indoor","region:berlin"]`).
/// Tags hold no quotes or backslashes (checked at registration), so the text between
/// `"region:` and the next quote is the whole value; no JSON parse per cabinet.
fn region_of(tags: Option<&str>) -> &str {
    tags.and_then(|t| t.find("\"region:").map(|i| &t[i + 8..])).and_then(|rest| rest.split('"').next()).unwrap_or("")
}

impl CabinetFilter {
    fn condition(&self) -> Condition {
        let mut c = Condition::all();
        if let Some(t) = &self.tenant {
            c = c.add(cabinet::Column::TenantId.eq(t.as_str()));
        }
        if let Some(on) = self.online {
            c = c.add(cabinet::Column::Online.eq(on));
        }
        if let Some(tag) = &self.tag {
            // Tags are stored as a JSON array of strings that cannot hold quotes or
            // backslashes (checked at registration), so `"tag"` matches one whole tag.
            c = c.add(Expr::col(cabinet::Column::Tags).like(LikeExpr::new(format!("%\"{tag}\"%"))));
        }
        if let Some(f) = &self.firmware {
            c = c.add(cabinet::Column::Firmware.eq(f.as_str()));
        }
        if let Some(text) = self.text.as_deref().filter(|t| !t.is_empty()) {
            let pattern = like_pattern(text);
            c = c.add(
                Condition::any()
                    .add(
                        Expr::expr(Func::lower(Expr::col(cabinet::Column::Id)))
                            .like(LikeExpr::new(&pattern).escape('\\')),
                    )
                    .add(
                        Expr::expr(Func::lower(Expr::col(cabinet::Column::Name)))
                            .like(LikeExpr::new(&pattern).escape('\\')),
                    ),
            );
        }
        c
    }
}

/// One cabinet's row in the fleet aggregate: only the columns the counts need.
type SummaryRow = (String, bool, Option<DateTime<Utc>>, Option<String>, Option<f64>, Option<f64>, Option<String>);

/// Counts of one group of cabinets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Counts {
    pub total: u64,
    pub online: u64,
    pub offline: u64,
    /// Offline and never heard from since registration.
    pub never_seen: u64,
}

impl Counts {
    fn add(&mut self, online: bool, seen: bool) {
        self.total += 1;
        if online {
            self.online += 1;
        } else {
            self.offline += 1;
            if !seen {
                self.never_seen += 1;
            }
        }
    }
}

/// A square of the map (`cell_deg` degrees on a side) with the cabinets inside it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct MapCell {
    /// The cell's south-west corner.
    pub lat: f64,
    pub lon: f64,
    pub total: u64,
    pub offline: u64,
}

/// The whole fleet (or one tenant) in numbers.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct FleetSummary {
    pub cabinets: Counts,
    pub by_tenant: BTreeMap<String, Counts>,
    /// By the value of each cabinet's `region:…` tag; cabinets without one under `""`.
    pub by_region: BTreeMap<String, Counts>,
    /// By firmware version; never-connected cabinets under `""`.
    pub by_firmware: BTreeMap<String, u64>,
    /// Side of the map cells, in degrees.
    pub cell_deg: f64,
    pub map: Vec<MapCell>,
    /// Cabinets without a location.
    pub unplaced: u64,
    /// Alarms nobody has acknowledged yet.
    pub open_alarms: u64,
}

/// The side of a map cell: fine enough to tell cities apart, coarse enough that 10,000
/// cabinets make at most a few hundred cells.
const CELL_DEG: f64 = 0.5;

/// One alarm as the inbox shows it.
#[derive(Debug, Clone)]
pub struct AlarmRow {
    pub event: cabinet_event::Model,
    pub tenant: String,
    pub ack: Option<alarm_ack::Model>,
}

impl AlarmRow {
    /// The alarm's code and detail, from the event as the cabinet reported it
    /// (`{"type": "alarm", "code": …, "detail": …}`).
    pub fn code_and_detail(&self) -> (String, String) {
        let body: serde_json::Value = serde_json::from_str(&self.event.body).unwrap_or_default();
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        (text("code"), text("detail"))
    }
}

/// Which alarms an inbox page shows.
#[derive(Debug, Clone, Default)]
pub struct AlarmFilter {
    pub tenant: Option<String>,
    pub cabinet: Option<String>,
    /// `Some(false)` open only, `Some(true)` acknowledged only.
    pub acknowledged: Option<bool>,
    /// Keyset cursor: strictly older than this (received_at, id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    /// Only alarms received after this (the live feed's watermark).
    pub received_after: Option<DateTime<Utc>>,
}

impl Store {
    /// A page of cabinets matching `filter`, ordered by id, after `after`.
    pub async fn find_cabinets(
        &self,
        filter: &CabinetFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<cabinet::Model>, StoreError> {
        let mut q = cabinet::Entity::find().filter(filter.condition()).order_by_asc(cabinet::Column::Id);
        if let Some(a) = after {
            q = q.filter(cabinet::Column::Id.gt(a));
        }
        Ok(q.limit(limit).all(self.connection()).await?)
    }

    /// How many cabinets match `filter`.
    pub async fn count_matching(&self, filter: &CabinetFilter) -> Result<u64, StoreError> {
        Ok(cabinet::Entity::find().filter(filter.condition()).count(self.connection()).await?)
    }

    /// Counts by state, tenant, region and firmware, the map cells and the open alarms,
    /// over the cabinets of `tenant` (all when `None`).
    pub async fn fleet_summary(&self, tenant: Option<&str>) -> Result<FleetSummary, StoreError> {
        let mut q = cabinet::Entity::find().select_only().columns([
            cabinet::Column::TenantId,
            cabinet::Column::Online,
            cabinet::Column::LastSeenAt,
            cabinet::Column::Tags,
            cabinet::Column::Latitude,
            cabinet::Column::Longitude,
            cabinet::Column::Firmware,
        ]);
        if let Some(t) = tenant {
            q = q.filter(cabinet::Column::TenantId.eq(t));
        }
        let rows: Vec<SummaryRow> = q.into_tuple().all(self.connection()).await?;
        let mut s = FleetSummary { cell_deg: CELL_DEG, ..Default::default() };
        let mut cells: BTreeMap<(i32, i32), (u64, u64)> = BTreeMap::new();
        for (tenant, online, last_seen, tags, lat, lon, firmware) in rows {
            let seen = last_seen.is_some();
            s.cabinets.add(online, seen);
            s.by_tenant.entry(tenant).or_default().add(online, seen);
            s.by_region.entry(region_of(tags.as_deref()).to_owned()).or_default().add(online, seen);
            *s.by_firmware.entry(firmware.unwrap_or_default()).or_default() += 1;
            match (lat, lon) {
                (Some(lat), Some(lon)) => {
                    let key = ((lat / CELL_DEG).floor() as i32, (lon / CELL_DEG).floor() as i32);
                    let cell = cells.entry(key).or_default();
                    cell.0 += 1;
                    cell.1 += u64::from(!online);
                }
                _ => s.unplaced += 1,
            }
        }
        s.map = cells
            .into_iter()
            .map(|((la, lo), (total, offline))| MapCell {
                lat: f64::from(la) * CELL_DEG,
                lon: f64::from(lo) * CELL_DEG,
                total,
                offline,
            })
            .collect();
        s.open_alarms = self
            .count_alarms(&AlarmFilter {
                tenant: tenant.map(str::to_owned),
                acknowledged: Some(false),
                ..Default::default()
            })
            .await?;
        Ok(s)
    }

    fn alarm_query(filter: &AlarmFilter) -> SelectStatement {
        let ev = cabinet_event::Entity;
        let mut q = Query::select();
        q.from(ev)
            .inner_join(
                cabinet::Entity,
                Expr::col((cabinet::Entity, cabinet::Column::Id)).equals((ev, cabinet_event::Column::CabinetId)),
            )
            .left_join(
                alarm_ack::Entity,
                Expr::col((alarm_ack::Entity, alarm_ack::Column::EventId)).equals((ev, cabinet_event::Column::Id)),
            )
            .and_where(Expr::col((ev, cabinet_event::Column::Kind)).eq("alarm"));
        if let Some(t) = &filter.tenant {
            q.and_where(Expr::col((cabinet::Entity, cabinet::Column::TenantId)).eq(t.as_str()));
        }
        if let Some(c) = &filter.cabinet {
            q.and_where(Expr::col((ev, cabinet_event::Column::CabinetId)).eq(c.as_str()));
        }
        match filter.acknowledged {
            Some(true) => {
                q.and_where(Expr::col((alarm_ack::Entity, alarm_ack::Column::EventId)).is_not_null());
            }
            Some(false) => {
                q.and_where(Expr::col((alarm_ack::Entity, alarm_ack::Column::EventId)).is_null());
            }
            None => {}
        }
        if let Some((at, id)) = filter.before {
            let received = Expr::col((ev, cabinet_event::Column::ReceivedAt));
            q.cond_where(
                Condition::any()
                    .add(received.clone().lt(at))
                    .add(Condition::all().add(received.eq(at)).add(Expr::col((ev, cabinet_event::Column::Id)).lt(id))),
            );
        }
        if let Some(after) = filter.received_after {
            q.and_where(Expr::col((ev, cabinet_event::Column::ReceivedAt)).gt(after));
        }
        q
    }

    /// How many alarms match.
    pub async fn count_alarms(&self, filter: &AlarmFilter) -> Result<u64, StoreError> {
        let mut q = Self::alarm_query(filter);
        q.expr_as(Expr::col((cabinet_event::Entity, cabinet_event::Column::Id)).count(), Alias::new("n"));
        let db = self.connection();
        let row = db.query_one(&q).await?;
        let n: i64 = match row {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Alarms newest first (by when the server received them), with their
    /// acknowledgement if any.
    pub async fn alarms(&self, filter: &AlarmFilter, limit: u64) -> Result<Vec<AlarmRow>, StoreError> {
        let ev = cabinet_event::Entity;
        let ack = alarm_ack::Entity;
        let mut q = Self::alarm_query(filter);
        for (col, name) in [
            (cabinet_event::Column::Id, "id"),
            (cabinet_event::Column::CabinetId, "cabinet_id"),
            (cabinet_event::Column::Seq, "seq"),
            (cabinet_event::Column::At, "at"),
            (cabinet_event::Column::Kind, "kind"),
            (cabinet_event::Column::Body, "body"),
            (cabinet_event::Column::ReceivedAt, "received_at"),
        ] {
            q.expr_as(Expr::col((ev, col)), Alias::new(name));
        }
        q.expr_as(Expr::col((cabinet::Entity, cabinet::Column::TenantId)), Alias::new("tenant_id"));
        for (col, name) in [
            (alarm_ack::Column::EventId, "ack_event_id"),
            (alarm_ack::Column::TokenId, "ack_token_id"),
            (alarm_ack::Column::TokenName, "ack_token_name"),
            (alarm_ack::Column::Note, "ack_note"),
            (alarm_ack::Column::AckedAt, "ack_at"),
        ] {
            q.expr_as(Expr::col((ack, col)), Alias::new(name));
        }
        q.order_by((ev, cabinet_event::Column::ReceivedAt), Order::Desc)
            .order_by((ev, cabinet_event::Column::Id), Order::Desc)
            .limit(limit);
        let db = self.connection();
        let rows = db.query_all(&q).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let event = cabinet_event::Model {
                id: r.try_get("", "id")?,
                cabinet_id: r.try_get("", "cabinet_id")?,
                seq: r.try_get("", "seq")?,
                at: r.try_get("", "at")?,
                kind: r.try_get("", "kind")?,
                body: r.try_get("", "body")?,
                received_at: r.try_get("", "received_at")?,
            };
            let ack = match r.try_get::<Option<Uuid>>("", "ack_event_id")? {
                Some(event_id) => Some(alarm_ack::Model {
                    event_id,
                    cabinet_id: event.cabinet_id.clone(),
                    token_id: r.try_get("", "ack_token_id")?,
                    token_name: r.try_get("", "ack_token_name")?,
                    note: r.try_get("", "ack_note")?,
                    acked_at: r.try_get("", "ack_at")?,
                }),
                None => None,
            };
            out.push(AlarmRow { tenant: r.try_get("", "tenant_id")?, event, ack });
        }
        Ok(out)
    }

    /// One alarm by its event id.
    pub async fn alarm(&self, id: Uuid) -> Result<Option<AlarmRow>, StoreError> {
        let Some(event) = cabinet_event::Entity::find_by_id(id).one(self.connection()).await? else {
            return Ok(None);
        };
        if event.kind != "alarm" {
            return Ok(None);
        }
        let Some(cab) = cabinet::Entity::find_by_id(event.cabinet_id.clone()).one(self.connection()).await? else {
            return Ok(None);
        };
        let ack = alarm_ack::Entity::find_by_id(id).one(self.connection()).await?;
        Ok(Some(AlarmRow { event, tenant: cab.tenant_id, ack }))
    }

    /// Records an acknowledgement; `Conflict` when the alarm already has one.
    pub async fn acknowledge_alarm(&self, ack: alarm_ack::Model) -> Result<(), StoreError> {
        let id = ack.event_id;
        alarm_ack::Entity::insert(alarm_ack::ActiveModel::from(ack))
            .exec_without_returning(self.connection())
            .await
            .map_err(|e| super::conflict_or(e, "alarm acknowledgement", &id.to_string()))?;
        Ok(())
    }

    /// The tenant of one cabinet.
    pub async fn cabinet_tenant(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(cabinet::Entity::find_by_id(id.to_owned())
            .select_only()
            .column(cabinet::Column::TenantId)
            .into_tuple::<String>()
            .one(self.connection())
            .await?)
    }

    /// Acknowledgements made after `after`, newest first, at most `limit` (for the live feed).
    pub async fn acks_after(&self, after: DateTime<Utc>, limit: u64) -> Result<Vec<alarm_ack::Model>, StoreError> {
        Ok(alarm_ack::Entity::find()
            .filter(alarm_ack::Column::AckedAt.gt(after))
            .order_by_desc(alarm_ack::Column::AckedAt)
            .order_by_desc(alarm_ack::Column::EventId)
            .limit(limit)
            .all(self.connection())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_cannot_inject_wildcards() {
        assert_eq!(like_pattern("Cab-1"), "%cab-1%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn the_region_is_read_from_the_stored_tags() {
        assert_eq!(region_of(Some(r#"["indoor","region:berlin"]"#)), "berlin");
        assert_eq!(region_of(Some(r#"["region:"]"#)), "");
        assert_eq!(region_of(Some(r#"["indoor"]"#)), "");
        assert_eq!(region_of(None), "");
    }

    #[test]
    fn counts_tell_never_seen_from_offline() {
        let mut c = Counts::default();
        c.add(true, true);
        c.add(false, true);
        c.add(false, false);
        assert_eq!(c, Counts { total: 3, online: 1, offline: 2, never_seen: 1 });
    }
}
