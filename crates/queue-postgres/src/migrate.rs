//! Versioned migrations, embedded in the crate and applied in order, each once, in one
//! transaction under an advisory lock (two processes migrating at once apply each version
//! once).

use sqlx::{Connection, PgConnection};

use queue_core::Result;

use crate::error::db_error;

/// The migrations, by version. `{schema}` stands for the deployment's (quoted) schema.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "jobs", include_str!("../migrations/0001_jobs.sql")),
    (2, "tallies", include_str!("../migrations/0002_tallies.sql")),
    (3, "floors", include_str!("../migrations/0003_floors.sql")),
    (
        4,
        "key_modes",
        include_str!("../migrations/0004_key_modes.sql"),
    ),
    (
        5,
        "lost_seen",
        include_str!("../migrations/0005_lost_seen.sql"),
    ),
    (6, "chains", include_str!("../migrations/0006_chains.sql")),
];

/// The version the code expects.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The schema in SQL: quoted (its name is checked by `config::check_schema`, so it needs
/// no escaping).
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Creates `schema` when missing and applies the migrations it lacks. Returns the versions
/// applied now.
pub(crate) async fn migrate(
    conn: &mut PgConnection,
    schema: &str,
    secrets: &[String],
) -> Result<Vec<i32>> {
    let err = |e| db_error(e, secrets);
    let q = quoted(schema);
    let mut tx = conn.begin().await.map_err(err)?;
    // One lock per schema: the key is the schema's name hashed by Postgres.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dcs-queue-migrate:' || $1))")
        .bind(schema)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {q}"))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {q}.migrations (version integer PRIMARY KEY, \
         name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    let have: Option<i32> = sqlx::query_scalar(&format!("SELECT max(version) FROM {q}.migrations"))
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
    let have = have.unwrap_or(0);
    if have > LATEST {
        let _ = tx.rollback().await;
        return Err(queue_core::Error::config(format!(
            "schema `{schema}` is at migration {have}, newer than this build knows ({LATEST}): \
             upgrade the queue before running it against this database"
        )));
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > have) {
        let sql = sql
            .replace("{schema}", &q)
            .replace("{tally_names}", &crate::rows::tally_names("j"));
        sqlx::raw_sql(&sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query(&format!(
            "INSERT INTO {q}.migrations (version, name) VALUES ($1, $2)"
        ))
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        applied.push(*version);
    }
    tx.commit().await.map_err(err)?;
    Ok(applied)
}

/// The schema's version (0 when it has none).
pub(crate) async fn version(
    conn: &mut PgConnection,
    schema: &str,
    secrets: &[String],
) -> Result<i32> {
    let q = quoted(schema);
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name = 'migrations')",
    )
    .bind(schema)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error(e, secrets))?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = sqlx::query_scalar(&format!("SELECT max(version) FROM {q}.migrations"))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error(e, secrets))?;
    Ok(v.unwrap_or(0))
}
