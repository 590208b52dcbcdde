//! The schema and its migrations: a versioned list applied at start, each in the same
//! transaction as its row in `fleetcore_schema`, under an advisory lock so nodes starting together
//! do not race.

use tokio_postgres::Client;

use crate::PgError;

/// Each migration: its version and the SQL that takes the schema from the previous version.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE fleetcore_kv (
         tbl text COLLATE \"C\" NOT NULL,
         key bytea NOT NULL,
         value bytea NOT NULL,
         PRIMARY KEY (tbl, key)
     )",
)];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Any constant shared by every node: the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x666c_6565_7463_6f72; // "fleetcor"

/// Brings the database up to [`SCHEMA_VERSION`]; refuses a database migrated by a newer build.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), PgError> {
    let failed = |e: tokio_postgres::Error| PgError::Migrate(crate::describe(&e));
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS fleetcore_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(failed)?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM fleetcore_schema",
            &[],
        )
        .await
        .map_err(failed)?;
    let current: i32 = row.try_get(0).map_err(failed)?;
    if current > SCHEMA_VERSION {
        return Err(PgError::Migrate(format!(
            "the database is at schema version {current}, newer than this build's \
             {SCHEMA_VERSION}: run a newer fleetcore"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO fleetcore_schema (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(failed)?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(failed)
}
