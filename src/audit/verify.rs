//! `tollgate audit verify` and `audit export`: reading the chain back.

use serde_json::Value;

use crate::store::{AuditFilter, AuditRow, Store, StoreError, chain};

const PAGE: i64 = 2_000;

/// The first record that does not belong where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: i64,
    pub id: String,
    pub reason: String,
}

/// Recomputes the whole chain. `Ok(n)`: all `n` records verify.
pub async fn verify(store: &Store) -> Result<Result<u64, Broken>, StoreError> {
    let mut prev = chain::GENESIS.to_string();
    let mut expected_seq = 1i64;
    let mut after = None;
    let mut count = 0u64;
    loop {
        let rows = store.audit(&AuditFilter { after_seq: after, limit: PAGE, ..AuditFilter::default() }).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.seq);
        for row in &rows {
            if let Err(reason) = chain::check(row, &prev, Some(expected_seq)) {
                return Ok(Err(Broken { seq: row.seq, id: row.id.clone(), reason }));
            }
            prev = row.hash.clone();
            expected_seq = row.seq + 1;
            count += 1;
        }
    }
    Ok(Ok(count))
}

/// One record as exported: its sealed body plus the chain links.
pub fn export_line(row: &AuditRow) -> String {
    let mut v: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("prev_hash".into(), Value::from(row.prev_hash.clone()));
        map.insert("hash".into(), Value::from(row.hash.clone()));
    }
    v.to_string()
}

/// Streams records matching `filter` in chain order to `out`, page by page.
pub async fn export(
    store: &Store,
    mut filter: AuditFilter,
    out: &mut impl std::io::Write,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut n = 0u64;
    let total_limit = filter.limit;
    loop {
        filter.limit = if total_limit > 0 { (total_limit - n as i64).min(PAGE) } else { PAGE };
        if filter.limit <= 0 {
            break;
        }
        let rows = store.audit(&filter).await?;
        let Some(last) = rows.last() else { break };
        filter.after_seq = Some(last.seq);
        for row in &rows {
            writeln!(out, "{}", export_line(row))?;
            n += 1;
        }
    }
    Ok(n)
}
