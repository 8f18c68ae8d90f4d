//! Persistence: the database is the source of truth.
//!
//! [`Store`] wraps one sea-orm connection pool (SQLite by default, PostgreSQL in
//! production) and offers the queries the actors and the API need, named after what they
//! do. Migrations from `lockerfleet-migrations` are applied by [`Store::connect`].

pub mod entities;
pub mod fleet_view;

use std::time::Duration;

use chrono::{DateTime, Utc};
use lockerfleet_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction,
    DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use entities::{cabinet, compartment, tenant};

/// The current time at the precision every backend keeps (PostgreSQL stores
/// microseconds), so a value read back equals the value written on SQLite and PostgreSQL.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("{what} {id:?} already exists")]
    Conflict { what: &'static str, id: String },
    #[error("{what} {id:?} does not exist")]
    Missing { what: &'static str, id: String },
}

/// A cabinet with its compartments, as registered.
#[derive(Debug, Clone)]
pub struct CabinetRecord {
    pub cabinet: cabinet::Model,
    pub compartments: Vec<compartment::Model>,
}

/// One cabinet's presence as stored.
#[derive(Debug, Clone)]
pub struct PresenceRow {
    pub cabinet: String,
    pub tenant: String,
    pub online: bool,
    pub session: Option<Uuid>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub firmware: Option<String>,
    pub hardware: Option<String>,
    pub slot: Option<String>,
}

/// A cabinet's online state as it last flipped in the database.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceFlip {
    pub cabinet: String,
    pub tenant: String,
    pub online: bool,
    pub at: DateTime<Utc>,
}

impl From<cabinet::Model> for PresenceRow {
    fn from(c: cabinet::Model) -> Self {
        Self {
            cabinet: c.id,
            tenant: c.tenant_id,
            online: c.online,
            session: c.session,
            last_seen_at: c.last_seen_at,
            firmware: c.firmware,
            hardware: c.hardware,
            slot: c.slot,
        }
    }
}

/// A change in whether a cabinet is online, as one replica saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum OnlineChange {
    /// It came online (with the MQTT session, when it announced one).
    Online { session: Option<Uuid> },
    /// Its last will for `session` arrived.
    Will { session: Uuid },
    /// It said nothing since before `cutoff`.
    Silent { cutoff: DateTime<Utc> },
}

/// What one replica learned about one cabinet since its last flush. Every write is
/// conditional, so replicas that each see part of a cabinet's traffic never overwrite
/// newer facts with older ones: last-seen only moves forward, an older session's will
/// never marks a newer session offline, and "silent" holds only if the database agrees.
#[derive(Debug, Clone, Default)]
pub struct PresenceUpdate {
    pub cabinet: String,
    pub seen: Option<DateTime<Utc>>,
    /// Firmware, hardware and slot from a hello this replica received.
    pub hello: Option<(String, String, String)>,
    pub online: Option<OnlineChange>,
    /// When the replica saw that change: what a flip of `online` is stamped with
    /// (`presence_changed_at`; the time of the write when absent).
    pub online_at: Option<DateTime<Utc>>,
    /// MQTT sessions this replica saw the cabinet start, with when.
    pub sessions: Vec<(Uuid, DateTime<Utc>)>,
}

/// Whether `e` says the database had no room for the work just now (SQLite's write lock
/// stayed taken past `busy_timeout`, no pooled connection was free in time), so that the
/// same request may well succeed if tried again.
pub fn is_busy(e: &DbErr) -> bool {
    matches!(e, DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout))
        || e.to_string().contains("database is locked")
}

/// PostgreSQL advisory lock key held while migrations run ("LFMIGR").
const MIGRATION_LOCK: i64 = 0x4c46_4d49_4752;

/// The database, shared by every actor and handler.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects and applies every pending migration.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbErr> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(max_connections)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        let db = Database::connect(opts).await?;
        if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            // Replicas of a deployment start together: one migrates, the others wait on
            // the lock and then find nothing left to do (two at once collide in the
            // catalogue). A session lock on its own connection dies with its process.
            let mut lock_opts = ConnectOptions::new(url.to_owned());
            lock_opts.max_connections(1).min_connections(1).sqlx_logging(false);
            let lock = Database::connect(lock_opts).await?;
            lock.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).await?;
            let migrated = Migrator::up(&db, None).await;
            let unlocked = lock.execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).await;
            let _ = lock.close().await;
            migrated?;
            unlocked?;
        } else {
            Migrator::up(&db, None).await?;
        }
        Ok(Self { db })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Connects without migrating (for tools that manage databases on a server).
    pub async fn connect_raw(url: &str) -> Result<Self, DbErr> {
        Ok(Self { db: Database::connect(url.to_owned()).await? })
    }

    /// Runs one SQL statement as it is (for tools: CREATE/DROP DATABASE).
    pub async fn execute_sql(&self, sql: &str) -> Result<(), DbErr> {
        self.db.execute_unprepared(sql).await.map(|_| ())
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue on `busy_timeout` instead of one failing
    /// when it tries to upgrade a stale read snapshot; on PostgreSQL it is a plain `BEGIN`.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        let options = TransactionOptions {
            sqlite_transaction_mode: match self.db.get_database_backend() {
                sea_orm::DatabaseBackend::Sqlite => Some(SqliteTransactionMode::Immediate),
                _ => None,
            },
            ..Default::default()
        };
        self.db.begin_with_options(options).await
    }

    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres
    }

    /// Cheap round trip for `/readyz`.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    pub async fn create_tenant(&self, id: &str, name: &str) -> Result<tenant::Model, StoreError> {
        if tenant::Entity::find_by_id(id.to_owned()).one(&self.db).await?.is_some() {
            return Err(StoreError::Conflict { what: "tenant", id: id.to_owned() });
        }
        let model = tenant::ActiveModel {
            id: Set(id.to_owned()),
            name: Set(name.to_owned()),
            created_at: Set(now()),
            ..Default::default()
        };
        tenant::Entity::insert(model).exec(&self.db).await.map_err(|e| conflict_or(e, "tenant", id))?;
        tenant::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::Missing { what: "tenant", id: id.to_owned() })
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<tenant::Model>, StoreError> {
        Ok(tenant::Entity::find_by_id(id.to_owned()).one(&self.db).await?)
    }

    pub async fn count_cabinets(&self) -> Result<u64, StoreError> {
        Ok(cabinet::Entity::find().count(&self.db).await?)
    }

    /// Registers a cabinet and its compartments in one transaction.
    pub async fn register_cabinet(
        &self,
        cab: cabinet::Model,
        compartments: Vec<compartment::Model>,
    ) -> Result<CabinetRecord, StoreError> {
        let id = cab.id.clone();
        let txn = self.begin_write().await?;
        if tenant::Entity::find_by_id(cab.tenant_id.clone()).one(&txn).await?.is_none() {
            return Err(StoreError::Missing { what: "tenant", id: cab.tenant_id });
        }
        if cabinet::Entity::find_by_id(id.clone()).one(&txn).await?.is_some() {
            return Err(StoreError::Conflict { what: "cabinet", id });
        }
        cabinet::Entity::insert(cabinet::ActiveModel::from(cab))
            .exec(&txn)
            .await
            .map_err(|e| conflict_or(e, "cabinet", &id))?;
        if !compartments.is_empty() {
            compartment::Entity::insert_many(compartments.into_iter().map(compartment::ActiveModel::from))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        self.cabinet(&id).await?.ok_or(StoreError::Missing { what: "cabinet", id })
    }

    /// One cabinet with its compartments.
    pub async fn cabinet(&self, id: &str) -> Result<Option<CabinetRecord>, StoreError> {
        let Some(cab) = cabinet::Entity::find_by_id(id.to_owned()).one(&self.db).await? else {
            return Ok(None);
        };
        let compartments = compartment::Entity::find()
            .filter(compartment::Column::CabinetId.eq(id))
            .order_by_asc(compartment::Column::Id)
            .all(&self.db)
            .await?;
        Ok(Some(CabinetRecord { cabinet: cab, compartments }))
    }

    /// Cabinets ordered by id, after `after` (keyset pagination), optionally of one tenant.
    pub async fn list_cabinets(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<cabinet::Model>, StoreError> {
        let mut q = cabinet::Entity::find().order_by_asc(cabinet::Column::Id);
        if let Some(t) = tenant {
            q = q.filter(cabinet::Column::TenantId.eq(t));
        }
        if let Some(a) = after {
            q = q.filter(cabinet::Column::Id.gt(a));
        }
        Ok(q.limit(limit).all(&self.db).await?)
    }

    /// Every registered cabinet's id and last known presence, for the presence actor's start.
    pub async fn all_presence(&self) -> Result<Vec<PresenceRow>, StoreError> {
        Ok(cabinet::Entity::find().all(&self.db).await?.into_iter().map(PresenceRow::from).collect())
    }

    /// The presence of one cabinet, or `None` when it is not registered.
    pub async fn presence_of(&self, id: &str) -> Result<Option<PresenceRow>, StoreError> {
        Ok(cabinet::Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(PresenceRow::from))
    }

    /// Whether each of these cabinets is online and when any replica last saw it, as
    /// stored (cabinets not registered are left out).
    pub async fn presence_seen(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, (bool, Option<DateTime<Utc>>)>, StoreError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            let rows = cabinet::Entity::find()
                .select_only()
                .columns([cabinet::Column::Id, cabinet::Column::Online, cabinet::Column::LastSeenAt])
                .filter(cabinet::Column::Id.is_in(chunk.iter().map(String::as_str)))
                .into_tuple::<(String, bool, Option<DateTime<Utc>>)>()
                .all(&self.db)
                .await?;
            out.extend(rows.into_iter().map(|(id, online, seen)| (id, (online, seen))));
        }
        Ok(out)
    }

    /// Cabinets whose online state flipped after `after`, newest first, at most `limit`,
    /// each with its state now (a cabinet that flipped twice shows its latest).
    pub async fn presence_changes_after(
        &self,
        after: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<PresenceFlip>, StoreError> {
        let rows = cabinet::Entity::find()
            .select_only()
            .columns([cabinet::Column::Id, cabinet::Column::TenantId, cabinet::Column::Online])
            .column(cabinet::Column::PresenceChangedAt)
            .filter(cabinet::Column::PresenceChangedAt.gt(after))
            .order_by_desc(cabinet::Column::PresenceChangedAt)
            .order_by_desc(cabinet::Column::Id)
            .limit(limit)
            .into_tuple::<(String, String, bool, Option<DateTime<Utc>>)>()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(cabinet, tenant, online, at)| Some(PresenceFlip { cabinet, tenant, online, at: at? }))
            .collect())
    }

    /// Writes a batch of presence updates in one transaction.
    pub async fn write_presence(&self, updates: &[PresenceUpdate]) -> Result<(), StoreError> {
        use sea_orm::Condition;
        use sea_orm::sea_query::Expr;
        let txn = self.begin_write().await?;
        let changed_at = now();
        let sessions: Vec<entities::cabinet_session::ActiveModel> = updates
            .iter()
            .flat_map(|u| {
                u.sessions.iter().map(|(s, at)| entities::cabinet_session::ActiveModel {
                    session: Set(*s),
                    cabinet_id: Set(u.cabinet.clone()),
                    started_at: Set(*at),
                })
            })
            .collect();
        if !sessions.is_empty() {
            // Another replica may have recorded the same session: one row each.
            let on_conflict = sea_orm::sea_query::OnConflict::column(entities::cabinet_session::Column::Session)
                .do_nothing()
                .to_owned();
            match entities::cabinet_session::Entity::insert_many(sessions)
                .on_conflict(on_conflict)
                .exec_without_returning(&txn)
                .await
            {
                Ok(_) | Err(DbErr::RecordNotInserted) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for u in updates {
            let id = cabinet::Column::Id.eq(u.cabinet.as_str());
            if let Some(at) = u.seen {
                cabinet::Entity::update_many()
                    .col_expr(cabinet::Column::LastSeenAt, Expr::value(Some(at)))
                    .filter(id.clone())
                    .filter(
                        Condition::any()
                            .add(cabinet::Column::LastSeenAt.is_null())
                            .add(cabinet::Column::LastSeenAt.lt(at)),
                    )
                    .exec(&txn)
                    .await?;
            }
            if let Some((firmware, hardware, slot)) = &u.hello {
                cabinet::Entity::update_many()
                    .col_expr(cabinet::Column::Firmware, Expr::value(Some(firmware.clone())))
                    .col_expr(cabinet::Column::Hardware, Expr::value(Some(hardware.clone())))
                    .col_expr(cabinet::Column::Slot, Expr::value(Some(slot.clone())))
                    .filter(id.clone())
                    .exec(&txn)
                    .await?;
            }
            let newer_or_same =
                |s: Uuid| Condition::any().add(cabinet::Column::Session.is_null()).add(cabinet::Column::Session.lte(s));
            // Stamped only when the row's `online` really flips (the right-hand side sees
            // the row as it was), so the live feed shows transitions, not repeats; with
            // the time the replica saw it, which no sighting it made since can precede.
            let flipped_at = u.online_at.unwrap_or(changed_at);
            let changed = |online: bool| {
                Expr::case(cabinet::Column::Online.eq(!online), Expr::value(Some(flipped_at)))
                    .finally(Expr::col(cabinet::Column::PresenceChangedAt))
            };
            match &u.online {
                None => {}
                Some(OnlineChange::Online { session: Some(s) }) => {
                    cabinet::Entity::update_many()
                        .col_expr(cabinet::Column::PresenceChangedAt, changed(true).into())
                        .col_expr(cabinet::Column::Online, Expr::value(true))
                        .col_expr(cabinet::Column::Session, Expr::value(Some(*s)))
                        .filter(id.clone())
                        .filter(newer_or_same(*s))
                        .exec(&txn)
                        .await?;
                }
                Some(OnlineChange::Online { session: None }) => {
                    cabinet::Entity::update_many()
                        .col_expr(cabinet::Column::PresenceChangedAt, changed(true).into())
                        .col_expr(cabinet::Column::Online, Expr::value(true))
                        .filter(id.clone())
                        .exec(&txn)
                        .await?;
                }
                Some(OnlineChange::Will { session }) => {
                    cabinet::Entity::update_many()
                        .col_expr(cabinet::Column::PresenceChangedAt, changed(false).into())
                        .col_expr(cabinet::Column::Online, Expr::value(false))
                        .col_expr(cabinet::Column::Session, Expr::value(Some(*session)))
                        .filter(id.clone())
                        .filter(newer_or_same(*session))
                        .exec(&txn)
                        .await?;
                }
                Some(OnlineChange::Silent { cutoff }) => {
                    cabinet::Entity::update_many()
                        .col_expr(cabinet::Column::PresenceChangedAt, changed(false).into())
                        .col_expr(cabinet::Column::Online, Expr::value(false))
                        .filter(id.clone())
                        .filter(
                            Condition::any()
                                .add(cabinet::Column::LastSeenAt.is_null())
                                .add(cabinet::Column::LastSeenAt.lt(*cutoff)),
                        )
                        .exec(&txn)
                        .await?;
                }
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Every stored token hash (for audits and tests: proves no secret is stored).
    pub async fn token_hashes(&self) -> Result<Vec<String>, StoreError> {
        Ok(entities::api_token::Entity::find().all(&self.db).await?.into_iter().map(|t| t.token_hash).collect())
    }

    /// The id of the token with this secret, if any (revoked or not).
    pub async fn token_id_of(&self, secret: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(entities::api_token::Entity::find()
            .filter(entities::api_token::Column::TokenHash.eq(crate::api::auth::token_hash(secret)))
            .one(&self.db)
            .await?
            .map(|t| t.id))
    }

    /// A named server secret, made by `make` and stored the first time it is asked for.
    /// Concurrent first starts of several replicas agree on one value (the insert that
    /// loses the race reads the winner's).
    pub async fn server_secret(&self, name: &str, make: impl FnOnce() -> String) -> Result<String, StoreError> {
        use entities::server_secret;
        if let Some(s) = server_secret::Entity::find_by_id(name.to_owned()).one(&self.db).await? {
            return Ok(s.value);
        }
        let row = server_secret::ActiveModel { name: Set(name.to_owned()), value: Set(make()), created_at: Set(now()) };
        let _ = server_secret::Entity::insert(row)
            .on_conflict(sea_orm::sea_query::OnConflict::column(server_secret::Column::Name).do_nothing().to_owned())
            .exec_without_returning(&self.db)
            .await;
        server_secret::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(|s| s.value)
            .ok_or(StoreError::Missing { what: "server secret", id: name.to_owned() })
    }

    /// How many cabinet events are stored.
    pub async fn count_cabinet_events(&self) -> Result<u64, StoreError> {
        Ok(entities::cabinet_event::Entity::find().count(&self.db).await?)
    }

    /// The sealed templates queued for a cabinet (ciphertext only).
    pub async fn sealed_templates_of(
        &self,
        cabinet: &str,
    ) -> Result<Vec<lockerfleet_shared::seal::SealedTemplate>, StoreError> {
        Ok(entities::sealed_template::Entity::find()
            .filter(entities::sealed_template::Column::CabinetId.eq(cabinet))
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|t| serde_json::from_str(&t.blob).ok())
            .collect())
    }

    /// A recipient's operator-held template as stored (encrypted), if the recipient exists
    /// and has one; `None` when the recipient does not exist.
    pub async fn recipient_template(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(entities::recipient::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(|r| r.template_ciphertext.unwrap_or_default()))
    }

    /// The database backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        match self.db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "postgresql",
            sea_orm::DatabaseBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }
}

/// Turns a unique-constraint violation (a concurrent insert that won the race) into
/// [`StoreError::Conflict`].
fn conflict_or(e: DbErr, what: &'static str, id: &str) -> StoreError {
    match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict { what, id: id.to_owned() },
        _ => StoreError::Db(e),
    }
}
