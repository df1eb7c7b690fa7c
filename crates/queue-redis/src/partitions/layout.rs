//! The layout of a partitioned queue: how many partitions new jobs go to, how many may
//! hold jobs, and each partition's hash tag (chosen, on a cluster, so the partitions
//! spread over the masters).

use queue_core::Result;
use redis::Value;

use crate::{
    RedisBackend,
    conn::Conn,
    keys::{Keys, partition_tag, slot},
};

/// A partitioned queue's layout, as stored in partition 0's `layout` hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Where new jobs go: partitions `0..partitions`.
    pub partitions: u32,
    /// Every partition that may hold a job: `0..span` (the most there ever were).
    pub span: u32,
    /// Per partition its tag's salt (none for partition 0, nor on a single server).
    pub salts: Vec<Option<u32>>,
}

/// Creates the layout unless one is stored; answers the stored one.
const CREATE: &str = r"
if redis.call('HEXISTS', KEYS[1], 'partitions') == 0 then
  redis.call('HSET', KEYS[1], 'partitions', ARGV[1], 'span', ARGV[1])
  for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return redis.call('HGETALL', KEYS[1])
";

/// Sets `partitions`, raises `span` to it, adds the salts of partitions new to the span
/// (never replacing one: a partition keeps its tag while it may hold jobs).
const RESIZE: &str = r"
local span = tonumber(redis.call('HGET', KEYS[1], 'span') or '1')
local p = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'partitions', p, 'span', math.max(span, p))
for i = 2, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
return redis.call('HGETALL', KEYS[1])
";

/// Writes back the layout a process knows when the stored one spans fewer partitions (it
/// was lost: a span never shrinks). Only ever raises the span, so processes that know
/// different layouts (one saw a resize the other has not yet) settle on the larger.
const RESTORE: &str = r"
local span = tonumber(redis.call('HGET', KEYS[1], 'span') or '0')
if span < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'partitions', ARGV[1], 'span', ARGV[2])
  for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return redis.call('HGETALL', KEYS[1])
";

/// Writes `known` back if the stored layout spans fewer partitions (see [`RESTORE`]).
pub(super) async fn restore(base: &RedisBackend, known: &Layout) -> Result<Layout> {
    let salts: Vec<(u32, u32)> = (0..)
        .zip(&known.salts)
        .filter_map(|(i, salt)| salt.map(|s| (i, s)))
        .collect();
    write(base, RESTORE, &[known.partitions, known.span], &salts).await
}

pub(super) async fn create(base: &RedisBackend, partitions: u32) -> Result<Layout> {
    let stored = read(base).await?;
    if stored.span > 1 || partitions == 1 {
        return Ok(stored);
    }
    let salts = choose_salts(base, &stored, partitions).await?;
    write(base, CREATE, &[partitions], &salts).await
}

/// Resizes to `partitions`; `prepare` gets the partitions new to the span (their keys as
/// they will be) before any job can be routed to them, to give them the queue's settings.
pub(super) async fn resize<F, Fut>(
    base: &RedisBackend,
    root: &str,
    partitions: u32,
    prepare: F,
) -> Result<Layout>
where
    F: FnOnce(Vec<RedisBackend>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let stored = read(base).await?;
    let salts = choose_salts(base, &stored, partitions).await?;
    let queue = &base.inner.config.queue_name;
    let new = (stored.span..partitions)
        .map(|i| {
            let salt = salts.iter().find(|(at, _)| *at == i).map(|(_, s)| *s);
            Ok(base.sibling(Keys::partition(root, queue, i, salt)?))
        })
        .collect::<Result<Vec<_>>>()?;
    prepare(new).await?;
    write(base, RESIZE, &[partitions], &salts).await
}

pub(super) async fn read(base: &RedisBackend) -> Result<Layout> {
    let mut conn = base.conn();
    let mut cmd = redis::cmd("HGETALL");
    cmd.arg(base.inner.keys.layout());
    // Answered within the response timeout, as every call (Redis gone: `no_answer`).
    let fields: Vec<(String, String)> =
        tokio::time::timeout(base.inner.response_timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| base.no_answer())?
            .map_err(|e| base.err(e))?;
    Ok(parse(fields))
}

/// Runs a layout `script`: ARGV the `counts` (partitions; then the span, for [`RESTORE`]),
/// then `salt:<i>`, salt pairs. Answers the stored layout.
async fn write(
    base: &RedisBackend,
    script: &str,
    counts: &[u32],
    salts: &[(u32, u32)],
) -> Result<Layout> {
    let script = redis::Script::new(script);
    let mut invocation = script.prepare_invoke();
    invocation.key(base.inner.keys.layout()).arg(counts);
    for (index, salt) in salts {
        invocation.arg(format!("salt:{index}")).arg(salt);
    }
    let mut conn = base.conn();
    let fields: Vec<(String, String)> = invocation
        .invoke_async(&mut conn)
        .await
        .map_err(|e| base.err(e))?;
    Ok(parse(fields))
}

fn parse(fields: Vec<(String, String)>) -> Layout {
    let mut layout = Layout {
        partitions: 1,
        span: 1,
        salts: Vec::new(),
    };
    let mut salts = Vec::new();
    for (field, value) in fields {
        match field.as_str() {
            "partitions" => layout.partitions = value.parse().unwrap_or(1),
            "span" => layout.span = value.parse().unwrap_or(1),
            f => {
                if let (Some(i), Ok(salt)) = (f.strip_prefix("salt:"), value.parse::<u32>())
                    && let Ok(i) = i.parse::<u32>()
                {
                    salts.push((i, salt));
                }
            }
        }
    }
    layout.span = layout.span.max(layout.partitions).max(1);
    layout.salts = vec![None; layout.span as usize];
    for (i, salt) in salts {
        if let Some(slot) = layout.salts.get_mut(i as usize) {
            *slot = Some(salt);
        }
    }
    layout
}

/// Every partition's backend for `layout`, reusing those already built.
pub(super) fn backends(
    base: &RedisBackend,
    root: &str,
    layout: &Layout,
    built: &[RedisBackend],
) -> Result<Vec<RedisBackend>> {
    let queue = &base.inner.config.queue_name;
    (0..layout.span)
        .map(|i| {
            let keys = Keys::partition(root, queue, i, layout.salts[i as usize])?;
            Ok(match built.iter().find(|b| b.inner.keys == keys) {
                Some(b) => b.clone(),
                None if i == 0 => base.clone(),
                None => base.sibling(keys),
            })
        })
        .collect()
}

/// Salts for the partitions of `0..partitions` new to the span: on a cluster each new
/// partition goes to the master holding the fewest partitions so far (its tag's slot in
/// that master's ranges); on a single server none is needed (answered empty).
async fn choose_salts(
    base: &RedisBackend,
    stored: &Layout,
    partitions: u32,
) -> Result<Vec<(u32, u32)>> {
    let mut conn = base.conn();
    if !matches!(conn, Conn::Cluster(_)) || partitions <= stored.span {
        return Ok(Vec::new());
    }
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .map_err(|e| base.err(e))?;
    let masters = masters(reply);
    if masters.is_empty() {
        return Ok(Vec::new());
    }
    let queue = &base.inner.config.queue_name;
    let owner = |tag: &str| {
        let s = slot(tag);
        masters
            .iter()
            .position(|ranges| ranges.iter().any(|(a, b)| (*a..=*b).contains(&s)))
    };
    let mut load = vec![0u32; masters.len()];
    for i in 0..stored.span {
        let tag = match i {
            0 => queue.clone(),
            i => partition_tag(queue, i, stored.salts.get(i as usize).copied().flatten()),
        };
        if let Some(m) = owner(&tag) {
            load[m] += 1;
        }
    }
    let mut out = Vec::new();
    for i in stored.span..partitions {
        let target = (0..masters.len()).min_by_key(|m| load[*m]).unwrap_or(0);
        let salt = (0..100_000u32)
            .find(|salt| owner(&partition_tag(queue, i, Some(*salt))) == Some(target))
            .unwrap_or(0);
        if let Some(m) = owner(&partition_tag(queue, i, Some(salt))) {
            load[m] += 1;
        }
        out.push((i, salt));
    }
    Ok(out)
}

/// `CLUSTER SLOTS` as each master's slot ranges (masters by address).
fn masters(reply: Value) -> Vec<Vec<(u16, u16)>> {
    let mut by_master: Vec<(String, Vec<(u16, u16)>)> = Vec::new();
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(node))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let address = node
            .iter()
            .take(2)
            .map(|v| match v {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::Int(i) => i.to_string(),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join(":");
        let span = (*a as u16, *b as u16);
        match by_master.iter_mut().find(|(m, _)| *m == address) {
            Some((_, list)) => list.push(span),
            None => by_master.push((address, vec![span])),
        }
    }
    by_master.sort();
    by_master.into_iter().map(|(_, ranges)| ranges).collect()
}
