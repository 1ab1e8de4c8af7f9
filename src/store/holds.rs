//! The ledger's arithmetic, the same for every backend: which requests of a
//! batch are admitted against the budgets' totals, and what resolving holds
//! moves from held to spent. Backends only read the totals and write the
//! results, inside the transaction that serialises writers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::kinds::Unit;
use super::rows::Cols;
use crate::calendar::Period;
use crate::store::error::StoreError;
use crate::store::ledger::{HoldLine, HoldOutcome, HoldRequest, Resolution};

/// A budget as the admission needs it.
#[derive(Debug, Clone)]
pub struct Budget {
    pub id: String,
    pub scope: String,
    pub org: Option<String>,
    pub unit: Unit,
    pub period: Period,
    pub limit: i64,
}

/// Every scope the batch's callers have, sorted, once each.
pub fn scopes(reqs: &[HoldRequest]) -> Vec<&str> {
    let mut scopes: Vec<&str> = reqs.iter().flat_map(|r| r.scopes.iter().map(String::as_str)).collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

/// Every period start a request of the batch can fall in.
pub fn period_starts(reqs: &[HoldRequest], period_start: fn(crate::calendar::Period, i64) -> Option<i64>) -> Vec<i64> {
    let mut starts: Vec<i64> =
        reqs.iter().flat_map(|r| Period::ALL.into_iter().filter_map(move |p| period_start(p, r.now))).collect();
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// Budgets and their stored totals from rows of
/// `b.id, b.scope, b.org, b.unit, b.period, b.limit_amount, u.period_start, u.spent, u.held`
/// (a budget left-joined with its usage rows, ordered by budget).
#[allow(clippy::type_complexity)]
pub fn read_budgets(rows: &[impl Cols]) -> Result<(Vec<Budget>, HashMap<(usize, i64), (i64, i64)>), StoreError> {
    let mut budgets: Vec<Budget> = Vec::new();
    let mut totals = HashMap::new();
    for r in rows {
        let id = r.text(0)?;
        let i = match budgets.iter().position(|b| b.id == id) {
            Some(i) => i,
            None => {
                budgets.push(Budget {
                    id,
                    scope: r.text(1)?,
                    org: r.opt_text(2)?,
                    unit: r.word(3)?,
                    period: r.word(4)?,
                    limit: r.int(5)?,
                });
                budgets.len() - 1
            }
        };
        if let Some(start) = r.opt_int(6)? {
            totals.insert((i, start), (r.int(7)?, r.int(8)?));
        }
    }
    Ok((budgets, totals))
}

/// What a batch of hold requests does.
#[derive(Debug, Default)]
pub struct Admission {
    /// One per request, in order.
    pub outcomes: Vec<HoldOutcome>,
    /// The requests admitted with lines to store: (index, lines).
    pub admitted: Vec<(usize, Vec<HoldLine>)>,
    /// New totals of every usage row touched: (budget id, period start, spent, held).
    pub usage: Vec<(String, i64, i64, i64)>,
}

/// Admits each request (all of its budgets fit, counting the requests
/// admitted before it) or denies it, in order. `totals` are the stored
/// (spent, held) per (budget index, period start).
pub fn admit(
    reqs: &[HoldRequest],
    budgets: &[Budget],
    mut totals: HashMap<(usize, i64), (i64, i64)>,
    period_start: fn(crate::calendar::Period, i64) -> Option<i64>,
) -> Admission {
    let mut out = Admission { outcomes: Vec::with_capacity(reqs.len()), ..Admission::default() };
    let mut touched: BTreeSet<(usize, i64)> = BTreeSet::new();
    for (n, req) in reqs.iter().enumerate() {
        let lines: Vec<(usize, i64, i64)> = budgets
            .iter()
            .enumerate()
            .filter(|(_, b)| req.scopes.contains(&b.scope) && b.org.as_ref().is_none_or(|o| *o == req.org))
            .filter_map(|(i, b)| {
                let amount = if b.unit == Unit::Tokens { req.tokens } else { req.money };
                (amount > 0).then(|| (i, period_start(b.period, req.now).unwrap_or(0), amount))
            })
            .collect();
        let refusal = lines.iter().find_map(|(i, p, amount)| {
            let (spent, held) = totals.get(&(*i, *p)).copied().unwrap_or((0, 0));
            (spent + held + amount > budgets[*i].limit).then_some((*i, spent, held, *amount))
        });
        if let Some((i, spent, held, needed)) = refusal {
            let b = &budgets[i];
            out.outcomes.push(HoldOutcome::Denied {
                budget_id: b.id.clone(),
                unit: b.unit,
                limit: b.limit,
                spent,
                held,
                needed,
            });
            continue;
        }
        let mut held_lines = Vec::with_capacity(lines.len());
        for (i, p, amount) in lines {
            totals.entry((i, p)).or_insert((0, 0)).1 += amount;
            touched.insert((i, p));
            held_lines.push(HoldLine {
                budget_id: budgets[i].id.clone(),
                unit: budgets[i].unit,
                period_start: p,
                amount,
            });
        }
        if !held_lines.is_empty() {
            out.admitted.push((n, held_lines.clone()));
        }
        out.outcomes.push(HoldOutcome::Held(held_lines));
    }
    out.usage = touched
        .into_iter()
        .map(|(i, p)| {
            let (spent, held) = totals[&(i, p)];
            (budgets[i].id.clone(), p, spent, held)
        })
        .collect();
    out
}

/// A hold's lines as stored: JSON `[[budget_id, period_start, unit, amount], ...]`.
pub fn lines_json(lines: &[HoldLine]) -> String {
    let lines: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::json!([l.budget_id, l.period_start, l.unit, l.amount])).collect();
    serde_json::Value::Array(lines).to_string()
}

/// Of a batch of resolutions, the first asked for each hold (a settle racing
/// the sweeper: the other is told it came second), by index.
pub fn first_of_each(rs: &[Resolution]) -> HashMap<&str, usize> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, r) in rs.iter().enumerate() {
        first.entry(r.hold_id.as_str()).or_insert(i);
    }
    first
}

/// Moves from held to spent, per (budget, period start): (released, charged).
#[derive(Debug, Default)]
pub struct Deltas(pub BTreeMap<(String, i64), (i64, i64)>);

impl Deltas {
    /// Adds a resolved hold: its amounts leave `held`; the charge (at most
    /// each line's amount) joins `spent`.
    pub fn add(&mut self, hold: &str, lines: &str, r: &Resolution) -> Result<(), StoreError> {
        let lines: Vec<(String, i64, String, i64)> =
            serde_json::from_str(lines).map_err(|e| StoreError::Invalid(format!("hold {hold}: bad lines: {e}")))?;
        for (budget, start, unit, amount) in lines {
            let charge = if unit == "tokens" { r.charged_tokens } else { r.charged }.clamp(0, amount);
            let d = self.0.entry((budget, start)).or_default();
            d.0 += amount;
            d.1 += charge;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, money: i64) -> HoldRequest {
        HoldRequest {
            hold_id: id.into(),
            owner: "o".into(),
            call_id: id.into(),
            principal: "k".into(),
            tool: "t".into(),
            org: "acme".into(),
            scopes: vec!["team:eng".into()],
            money,
            tokens: 0,
            now: 0,
            expires_at: 1,
        }
    }

    #[test]
    fn a_batch_is_admitted_in_order_against_the_running_totals() {
        let budgets = vec![Budget {
            id: "b".into(),
            scope: "team:eng".into(),
            org: None,
            unit: Unit::Money,
            period: Period::None,
            limit: 10,
        }];
        let totals = HashMap::from([((0, 0), (3, 2))]);
        let a = admit(&[req("1", 4), req("2", 2), req("3", 1)], &budgets, totals, |_, _| Some(0));
        assert!(matches!(a.outcomes[0], HoldOutcome::Held(_)));
        assert!(matches!(a.outcomes[1], HoldOutcome::Denied { held: 6, needed: 2, .. }));
        assert!(matches!(a.outcomes[2], HoldOutcome::Held(_)));
        assert_eq!(a.usage, vec![("b".to_string(), 0, 3, 7)]);
        assert_eq!(a.admitted.len(), 2);
    }
}
