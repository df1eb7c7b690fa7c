//! Where the database is and which schema holds the queue's tables.

use std::fmt;

use queue_core::{Error, RedisUrl, Result};

/// The variable [`PostgresConfig::from_env`] reads the database URL from.
pub const DATABASE_URL_VAR: &str = "DCS_DATABASE_URL";
/// The variable [`PostgresConfig::from_env`] reads the schema from.
pub const SCHEMA_VAR: &str = "DCS_DATABASE_SCHEMA";
/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "dcs_queue";
/// The longest schema name: Postgres names are at most 63 bytes, and the wake-up channel
/// (`<schema>_wake`) must fit too.
pub const MAX_SCHEMA_BYTES: usize = 58;

/// A database URL and the schema of one deployment (tests use one schema each).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    url: String,
    schema: String,
}

impl PostgresConfig {
    /// A configuration for `url` (`postgres://user:password@host:port/database`) and
    /// [`DEFAULT_SCHEMA`]. The URL is checked for its scheme only; the password never
    /// appears in `Debug`, logs or errors.
    pub fn new(url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::config(format!(
                "database URL `{}` must start with postgres:// or postgresql://",
                redact(&url)
            )));
        }
        Ok(Self {
            url,
            schema: DEFAULT_SCHEMA.to_owned(),
        })
    }

    /// From `DCS_DATABASE_URL` and, when set, `DCS_DATABASE_SCHEMA`.
    pub fn from_env() -> Result<Self> {
        let url = std::env::var(DATABASE_URL_VAR).map_err(|_| {
            Error::config(format!(
                "{DATABASE_URL_VAR} is not set (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            ))
        })?;
        let cfg = Self::new(url)?;
        match std::env::var(SCHEMA_VAR) {
            Ok(schema) => cfg.schema(schema),
            Err(_) => Ok(cfg),
        }
    }

    /// Uses `schema` for the queue's tables: a lowercase letter or `_`, then lowercase
    /// letters, digits or `_`, at most [`MAX_SCHEMA_BYTES`] bytes.
    pub fn schema(mut self, schema: impl Into<String>) -> Result<Self> {
        let schema = schema.into();
        check_schema(&schema)?;
        self.schema = schema;
        Ok(self)
    }

    /// The schema's name.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("schema", &self.schema)
            .finish()
    }
}

/// The rule for schema names (see [`PostgresConfig::schema`]).
pub fn check_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok {
        return Err(Error::config(format!(
            "schema `{schema}` must start with a lowercase letter or `_` and hold only \
             lowercase letters, digits and `_`"
        )));
    }
    if schema.len() > MAX_SCHEMA_BYTES {
        return Err(Error::config(format!(
            "schema `{schema}` is {} bytes, longer than {MAX_SCHEMA_BYTES}",
            schema.len()
        )));
    }
    Ok(())
}

/// The one redaction rule of URLs with passwords (the user part or a `password=` query
/// parameter), shared with the Redis URLs.
pub(crate) fn redact(url: &str) -> String {
    RedisUrl::redact(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_at_their_bound_and_one_past() {
        let at = "s".repeat(MAX_SCHEMA_BYTES);
        assert!(check_schema(&at).is_ok());
        let past = "s".repeat(MAX_SCHEMA_BYTES + 1);
        let err = check_schema(&past).unwrap_err().to_string();
        assert!(err.contains("longer than 58"), "{err}");
        for bad in ["", "1abc", "Abc", "a-b", "a\"b", "a b"] {
            assert!(check_schema(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_schema("_t_01").is_ok());
    }

    #[test]
    fn passwords_never_show() {
        let cfg = PostgresConfig::new("postgres://app:s3cret@db:5432/app?password=s3cret").unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@db:5432/app"), "{shown}");
        let err = PostgresConfig::new("mysql://app:s3cret@db/app")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("s3cret") && err.contains("postgres://"),
            "{err}"
        );
    }
}
