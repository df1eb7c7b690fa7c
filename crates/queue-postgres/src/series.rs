//! The charts' series: per bucket of each span, what the lifetime counters counted, the
//! latencies of starts and attempts (`queue_core::series` fields and buckets), and the
//! gauges a heartbeat sampled.

use std::collections::BTreeMap;

use queue_core::backend::Millis;
use queue_core::series::gauges;
use queue_core::{Result, Series, SeriesSpan};
use sqlx::PgConnection;

use crate::PostgresBackend;

impl PostgresBackend {
    /// Adds `fields` (field, delta) to the buckets of `now`, one per span.
    pub(crate) async fn add_series(
        &self,
        conn: &mut PgConnection,
        now: Millis,
        fields: &BTreeMap<String, i64>,
    ) -> Result<()> {
        if fields.is_empty() {
            return Ok(());
        }
        let (mut spans, mut buckets, mut names, mut ns) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for span in SeriesSpan::ALL {
            for (field, n) in fields {
                spans.push(span.tag());
                buckets.push(span.bucket(now));
                names.push(field.as_str());
                ns.push(*n);
            }
        }
        sqlx::query(&format!(
            "INSERT INTO {}.series (queue, span, bucket, field, n) \
             SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::int8[])",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(&spans)
        .bind(&buckets)
        .bind(&names)
        .bind(&ns)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Samples the gauges (`queue_core::series::gauges` of the stats) into the buckets of
    /// now: a heartbeat's.
    pub(crate) async fn sample(&self) -> Result<()> {
        let stats = self.stats().await?;
        let mut conn = self.inner.pool.acquire().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut conn).await?;
        let (mut spans, mut buckets, mut names, mut values) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for span in SeriesSpan::ALL {
            for (name, value) in gauges(&stats) {
                spans.push(span.tag());
                buckets.push(span.bucket(now));
                names.push(name);
                values.push(value as i64);
            }
        }
        sqlx::query(&format!(
            "INSERT INTO {}.gauges (queue, span, bucket, field, value) \
             SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::int8[]) \
             ON CONFLICT (queue, span, bucket, field) DO UPDATE SET value = excluded.value",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(&spans)
        .bind(&buckets)
        .bind(&names)
        .bind(&values)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// The series of `span` ending with the interval of now.
    pub async fn series(&self, span: SeriesSpan) -> Result<Series> {
        let s = &self.inner.schema;
        let mut conn = self.inner.pool.acquire().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut conn).await?;
        let last = span.bucket(now);
        let first = last - span.points() as i64 + 1;
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
            "SELECT bucket, field, sum(n)::int8 FROM {s}.series WHERE queue = $1 AND span = $2 \
             AND bucket BETWEEN $3 AND $4 GROUP BY bucket, field \
             UNION ALL SELECT bucket, field, value FROM {s}.gauges WHERE queue = $1 AND span = $2 \
             AND bucket BETWEEN $3 AND $4"
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(span.tag())
        .bind(first)
        .bind(last)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let mut by_bucket: BTreeMap<i64, Vec<(String, u64)>> = BTreeMap::new();
        for (bucket, field, n) in rows {
            by_bucket
                .entry(bucket)
                .or_default()
                .push((field, n.max(0) as u64));
        }
        Ok(Series::read(span, now, |i| {
            by_bucket
                .get(&i)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), *v))
        }))
    }

    /// Drops buckets past their keep and folds each kept bucket's deltas into one row per
    /// field (the sweep's).
    pub(crate) async fn fold_series(&self, conn: &mut PgConnection, now: Millis) -> Result<()> {
        let s = &self.inner.schema;
        for span in SeriesSpan::ALL {
            // The first bucket still kept: expires_at(i) > now.
            let keep_from = (now - span.keep_ms()).div_euclid(span.step_ms());
            for table in ["series", "gauges"] {
                sqlx::query(&format!(
                    "DELETE FROM {s}.{table} WHERE queue = $1 AND span = $2 AND bucket < $3"
                ))
                .bind(&self.inner.queue.queue_name)
                .bind(span.tag())
                .bind(keep_from)
                .execute(&mut *conn)
                .await
                .map_err(|e| self.db(e))?;
            }
        }
        sqlx::query(&format!(
            "WITH folded AS (DELETE FROM {s}.series WHERE queue = $1 RETURNING span, bucket, field, n) \
             INSERT INTO {s}.series (queue, span, bucket, field, n) \
             SELECT $1, span, bucket, field, sum(n) FROM folded GROUP BY span, bucket, field"
        ))
        .bind(&self.inner.queue.queue_name)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }
}
