-- Version 2: `stats` sums deltas instead of counting rows. Every statement that moves a
-- job row adds the deltas of the names it leaves and joins (`now:<status>`,
-- `now:ready:<band>`, `now:scheduled`, `now:waiting`; `rows::tally_names`) to `counts`,
-- beside the lifetime counters, and the sweep folds them. This backfills the tallies of
-- the rows a version-1 schema already holds. `{tally_names}` is that rule over `j`.
INSERT INTO {schema}.counts (queue, name, n)
SELECT j.queue, t.name, count(*)
FROM {schema}.jobs j, unnest({tally_names}) AS t(name)
WHERE t.name IS NOT NULL
GROUP BY j.queue, t.name;
