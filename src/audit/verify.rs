//! `mcp-sentinel audit verify`: reads records back from a sink and checks every chain — each
//! record's hash matches its content, links to the one before, and no sequence number is
//! missing — naming the first broken link.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use super::record::{GENESIS, sha256_hex, split_hash};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub records: usize,
    /// Chains (instances) and their record counts, in order of first appearance.
    pub chains: Vec<(String, usize)>,
    /// Identical copies of a record (a redelivery to a sink that cannot tell), skipped.
    pub duplicates: usize,
    /// The first broken link, when any.
    pub broken: Option<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broken {
            Some(why) => write!(f, "broken: {why}"),
            None => {
                write!(
                    f,
                    "ok: {} records in {} chain{}",
                    self.records,
                    self.chains.len(),
                    if self.chains.len() == 1 { "" } else { "s" }
                )?;
                if self.duplicates > 0 {
                    write!(f, " ({} duplicate copies skipped)", self.duplicates)?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Deserialize)]
struct Entry {
    id: String,
    instance: String,
    seq: u64,
    prev: String,
}

struct Checked {
    e: Entry,
    hash: String,
    intact: bool,
}

/// Verifies the records in `lines` (any order, several chains mixed). `allow_trimmed`: a chain
/// may start after seq 1 (a Redis stream trimmed by MAXLEN).
pub fn verify_lines<I, S>(lines: I, allow_trimmed: bool) -> Report
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut report = Report::default();
    let mut order: Vec<String> = Vec::new();
    let mut chains: HashMap<String, Vec<Checked>> = HashMap::new();
    for (i, line) in lines.into_iter().enumerate() {
        let line = line.as_ref().trim();
        if line.is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Entry>(line)
            .ok()
            .zip(split_hash(line));
        let Some((e, (hash, body))) = parsed else {
            report.broken = Some(format!(
                "record #{} read back is not an audit record (or its hash field was removed)",
                i + 1
            ));
            return report;
        };
        let intact = sha256_hex(body.as_bytes()) == hash;
        report.records += 1;
        if !chains.contains_key(&e.instance) {
            order.push(e.instance.clone());
        }
        chains.entry(e.instance.clone()).or_default().push(Checked {
            hash: hash.to_string(),
            e,
            intact,
        });
    }
    for instance in order {
        let mut chain = chains.remove(&instance).unwrap_or_default();
        chain.sort_by_key(|c| c.e.seq);
        let mut prev: Option<&Checked> = None;
        let mut count = 0;
        for c in &chain {
            let why = match prev {
                _ if !c.intact => Some(format!(
                    "chain {instance}: record {} (seq {}) was altered: its content does not match its hash",
                    c.e.id, c.e.seq
                )),
                None if c.e.seq != 1 && !allow_trimmed => Some(format!(
                    "chain {instance}: starts at record {} (seq {}): seq 1..{} missing (deleted)",
                    c.e.id,
                    c.e.seq,
                    c.e.seq - 1
                )),
                None if c.e.seq == 1 && c.e.prev != GENESIS => Some(format!(
                    "chain {instance}: record {} (seq 1) does not start a chain",
                    c.e.id
                )),
                None => None,
                Some(p) if p.e.seq == c.e.seq && p.hash == c.hash => {
                    report.duplicates += 1;
                    continue;
                }
                Some(p) if p.e.seq == c.e.seq => Some(format!(
                    "chain {instance}: seq {} appears twice with different contents (records {} and {})",
                    c.e.seq, p.e.id, c.e.id
                )),
                Some(p) if c.e.seq != p.e.seq + 1 => Some(format!(
                    "chain {instance}: after record {} (seq {}) comes seq {}: {} record{} missing (deleted)",
                    p.e.id,
                    p.e.seq,
                    c.e.seq,
                    c.e.seq - p.e.seq - 1,
                    if c.e.seq - p.e.seq - 1 == 1 { "" } else { "s" }
                )),
                Some(p) if c.e.prev != p.hash => Some(format!(
                    "chain {instance}: record {} (seq {}) does not link to record {} (seq {}): one of them was replaced",
                    c.e.id, c.e.seq, p.e.id, p.e.seq
                )),
                Some(_) => None,
            };
            if let Some(why) = why {
                report.broken = Some(why);
                return report;
            }
            count += 1;
            prev = Some(c);
        }
        report.chains.push((instance, count));
    }
    report
}

/// Why the records could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", .path.display())]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0:?} is not a table name")]
    TableName(String),
}

/// The lines of JSON-lines files, in the order given (rotated files: oldest first or not —
/// chains are sorted by sequence number).
pub fn read_files(paths: &[std::path::PathBuf]) -> Result<Vec<String>, ReadError> {
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|source| ReadError::File {
            path: p.clone(),
            source,
        })?;
        out.extend(text.lines().map(str::to_string));
    }
    Ok(out)
}

/// Every record of a Redis stream, oldest first.
pub async fn read_redis(url: &str, stream: &str) -> Result<Vec<String>, ReadError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let page: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(out);
        };
        start = format!("({last}");
        for (_, fields) in page {
            for pair in fields.chunks(2) {
                if let [k, v] = pair
                    && k == "record"
                {
                    out.push(v.clone());
                }
            }
        }
    }
}

/// Every record of a PostgreSQL table, by chain and sequence.
pub async fn read_postgres(url: &str, table: &str) -> Result<Vec<String>, ReadError> {
    let valid = !table.is_empty()
        && table.len() <= 63
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(ReadError::TableName(table.to_string()));
    }
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!("SELECT line FROM {table} ORDER BY instance, seq"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Draft;
    use crate::audit::seal::ChainHead;

    fn chain(n: usize) -> Vec<String> {
        let mut head = ChainHead::new("t");
        (0..n)
            .map(|i| {
                head.seal(&Draft {
                    request_id: i as u64,
                    ..Draft::default()
                })
                .text
                .to_string()
            })
            .collect()
    }

    #[test]
    fn intact_chains_pass_in_any_order() {
        let mut lines = chain(5);
        lines.extend(chain(3));
        lines.swap(0, 6);
        lines.push(lines[2].clone());
        let r = verify_lines(&lines, false);
        assert_eq!(r.broken, None);
        assert_eq!(r.records, 9);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.chains.len(), 2);
        assert!(r.to_string().starts_with("ok: 9 records in 2 chains"));
    }

    #[test]
    fn edits_and_deletions_are_named() {
        let lines = chain(5);
        let id = |i: usize| {
            serde_json::from_str::<serde_json::Value>(&lines[i]).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("\"request_id\":2", "\"request_id\":99");
        let why = verify_lines(&edited, false).broken.unwrap();
        assert!(
            why.contains(&format!("record {} (seq 3) was altered", id(2))),
            "{why}"
        );

        let mut deleted = lines.clone();
        deleted.remove(3);
        let why = verify_lines(&deleted, false).broken.unwrap();
        assert!(
            why.contains(&format!(
                "after record {} (seq 3) comes seq 5: 1 record missing",
                id(2)
            )),
            "{why}"
        );

        let why = verify_lines(&lines[2..], false).broken.unwrap();
        assert!(why.contains("seq 1..2 missing"), "{why}");
        assert_eq!(verify_lines(&lines[2..], true).broken, None);

        // Replaced with a record of another chain renumbered: it does not link.
        let other = chain(5);
        let mut replaced = lines.clone();
        replaced[3] = other[3].replace(
            &serde_json::from_str::<serde_json::Value>(&other[3]).unwrap()["instance"]
                .as_str()
                .unwrap()
                .to_string(),
            "x",
        );
        assert!(verify_lines(&replaced, false).broken.is_some());
        assert!(verify_lines(["not json"], false).broken.is_some());
    }
}
