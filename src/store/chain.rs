//! The audit hash chain: how a record is sealed and how a sealed record is
//! checked. Pure functions, shared by the writers and `audit verify`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::audit::{AuditDraft, AuditRow};

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over the previous hash and the record's canonical body.
pub fn hash(prev_hash: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// Seals `draft` as record number `seq` after `prev_hash`. The body carries
/// the sequence number, so a reordered or renumbered row breaks the chain,
/// and every indexed column the draft sets, so the columns a query filters
/// on are sealed too (verification checks that they agree).
pub fn seal(draft: &AuditDraft, seq: i64, prev_hash: &str) -> AuditRow {
    let mut fields = draft.fields.clone();
    let columns = [
        ("call_id", &draft.call_id),
        ("org", &draft.org),
        ("principal", &draft.principal),
        ("tool", &draft.tool),
        ("decision", &draft.decision),
    ];
    for (name, value) in columns {
        if let Some(v) = value {
            fields.insert(name.into(), Value::from(v.clone()));
        }
    }
    fields.insert("seq".into(), Value::from(seq));
    fields.insert("id".into(), Value::from(draft.id.clone()));
    fields.insert("kind".into(), Value::from(draft.kind.clone()));
    fields.insert("ts".into(), Value::from(draft.ts));
    let body = serde_json::to_string(&Value::Object(fields)).unwrap_or_default();
    let hash = hash(prev_hash, &body);
    AuditRow {
        seq,
        id: draft.id.clone(),
        ts: draft.ts,
        kind: draft.kind.clone(),
        call_id: draft.call_id.clone(),
        org: draft.org.clone(),
        principal: draft.principal.clone(),
        tool: draft.tool.clone(),
        decision: draft.decision.clone(),
        body,
        prev_hash: prev_hash.to_string(),
        hash,
    }
}

/// Seals `drafts` in order after the chain head `(seq, hash)`; the rows and
/// the new head.
pub fn seal_after(drafts: &[AuditDraft], head: (i64, String)) -> (Vec<AuditRow>, (i64, String)) {
    let (mut seq, mut prev) = head;
    let rows = drafts
        .iter()
        .map(|d| {
            seq += 1;
            let row = seal(d, seq, &prev);
            prev.clone_from(&row.hash);
            row
        })
        .collect();
    (rows, (seq, prev))
}

/// Why a row does not belong where it is in the chain.
pub fn check(row: &AuditRow, expected_prev: &str, expected_seq: Option<i64>) -> Result<(), String> {
    if row.prev_hash != expected_prev {
        return Err(format!("prev_hash {} does not match the hash of the record before it", short(&row.prev_hash)));
    }
    if let Some(seq) = expected_seq
        && row.seq != seq
    {
        return Err(format!("sequence number {} where {seq} was expected (a record is missing)", row.seq));
    }
    let recomputed = hash(&row.prev_hash, &row.body);
    if recomputed != row.hash {
        return Err(format!(
            "hash {} does not match its contents (recomputed {})",
            short(&row.hash),
            short(&recomputed)
        ));
    }
    let body: Value = serde_json::from_str(&row.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let column_mismatch = [
        ("id", Some(row.id.clone()), text("id")),
        ("kind", Some(row.kind.clone()), text("kind")),
        ("call_id", row.call_id.clone(), text("call_id")),
        ("org", row.org.clone(), text("org")),
        ("principal", row.principal.clone(), text("principal")),
        ("tool", row.tool.clone(), text("tool")),
        ("decision", row.decision.clone(), text("decision")),
    ]
    .into_iter()
    .find(|(_, col, body)| col != body);
    if let Some((name, col, _)) = column_mismatch {
        return Err(format!("column `{name}` ({}) disagrees with the sealed record", col.unwrap_or_default()));
    }
    if body.get("seq").and_then(Value::as_i64) != Some(row.seq) {
        return Err("column `seq` disagrees with the sealed record".into());
    }
    if body.get("ts").and_then(Value::as_i64) != Some(row.ts) {
        return Err("column `ts` disagrees with the sealed record".into());
    }
    Ok(())
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(n: u32) -> AuditDraft {
        let mut fields = serde_json::Map::new();
        fields.insert("tool".into(), Value::from("t"));
        fields.insert("n".into(), Value::from(n));
        AuditDraft {
            id: format!("a{n}"),
            ts: 1,
            kind: "call".into(),
            call_id: None,
            org: None,
            principal: None,
            tool: Some("t".into()),
            decision: None,
            fields,
        }
    }

    #[test]
    fn a_sealed_chain_checks_and_any_change_breaks_it() {
        let a = seal(&draft(1), 1, GENESIS);
        let b = seal(&draft(2), 2, &a.hash);
        assert_eq!(check(&a, GENESIS, Some(1)), Ok(()));
        assert_eq!(check(&b, &a.hash, Some(2)), Ok(()));

        let mut body = b.clone();
        body.body = body.body.replace("\"n\":2", "\"n\":3");
        assert!(check(&body, &a.hash, Some(2)).unwrap_err().contains("does not match its contents"));
        let mut col = b.clone();
        col.tool = Some("other".into());
        assert!(check(&col, &a.hash, Some(2)).unwrap_err().contains("`tool`"));
        assert!(check(&b, GENESIS, Some(2)).unwrap_err().contains("prev_hash"));
        assert!(check(&b, &a.hash, Some(3)).unwrap_err().contains("missing"));
    }
}
