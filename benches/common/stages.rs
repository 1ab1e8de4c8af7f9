//! p50 of each pipeline stage, from a gateway's own audit records (every
//! governed call records its stage latencies). Shared by the benches.

pub fn report_stages(label: &str, rows: &[tollgate::store::AuditRow]) {
    let mut stages: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for r in rows {
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("body");
        if let Some(map) = body["stages_us"].as_object() {
            for (k, v) in map {
                stages.entry(k.clone()).or_default().push(v.as_u64().unwrap_or(0));
            }
        }
    }
    let line: Vec<String> = stages
        .iter_mut()
        .map(|(k, v)| {
            v.sort_unstable();
            format!("{k} {}", v[v.len() / 2])
        })
        .collect();
    println!("stage p50 (us, {label}, {} calls): {}", rows.len(), line.join(", "));
}
