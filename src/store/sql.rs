//! The statements of the ledger and the audit chain, written once for every
//! SQL backend and instantiated in each (sqlx's `QueryBuilder` writes each
//! backend's placeholders; `UPDATE ... FROM (VALUES ...)`, `RETURNING` and
//! `ON CONFLICT` read the same in SQLite and PostgreSQL). Callers run them
//! inside the transaction that serialises writers.

/// Defines `append_in`, `hold_in` and `resolve_in` for one backend:
/// `ledger_statements!(sqlx::Sqlite, sqlx::SqliteConnection)`.
macro_rules! ledger_statements {
    ($db:ty, $conn:ty) => {
        /// Appends `drafts` after `head` (or the head read from the table); returns
        /// the new head.
        pub(super) async fn append_in(
            conn: &mut $conn,
            drafts: &[$crate::store::audit::AuditDraft],
            mut head: Option<(i64, String)>,
        ) -> Result<Option<(i64, String)>, $crate::store::error::StoreError> {
            if drafts.is_empty() {
                return Ok(head);
            }
            // A cached head may be stale (another writer appended since): on
            // a collision the head is read again and the records sealed after
            // it. Under the writer lock that read is final, so one retry is
            // enough; without the lock a busy chain can collide again, and the
            // caller appends again under the lock.
            for attempt in 0..2 {
                let start = match head.take() {
                    Some(h) => h,
                    None => {
                        let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                            .fetch_optional(&mut *conn)
                            .await?;
                        $crate::store::rows::head(row.as_ref())?
                    }
                };
                let (rows, next) = $crate::store::chain::seal_after(drafts, start);
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "INSERT INTO audit ({}) ",
                    $crate::store::rows::AUDIT_COLUMNS
                ));
                q.push_values(&rows, |mut b, row| {
                    b.push_bind(row.seq)
                        .push_bind(&row.id)
                        .push_bind(row.ts)
                        .push_bind(&row.kind)
                        .push_bind(&row.call_id)
                        .push_bind(&row.org)
                        .push_bind(&row.principal)
                        .push_bind(&row.tool)
                        .push_bind(&row.decision)
                        .push_bind(&row.body)
                        .push_bind(&row.prev_hash)
                        .push_bind(&row.hash);
                });
                // A failed statement changes nothing, in or out of a transaction.
                match q.build().execute(&mut *conn).await {
                    Ok(_) => return Ok(Some(next)),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempt == 0 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err($crate::store::error::StoreError::Unavailable(
                "another writer appended to the audit chain at the same moment".into(),
            ))
        }

        /// The audit rows `f` selects, oldest first. Only the filters given
        /// become conditions, so the planner can use the indexes on `ts`,
        /// `(org, ts)` and `call_id` (`?1 IS NULL OR col = ?1` defeats them).
        pub(super) fn audit_select(f: &$crate::store::audit::AuditFilter) -> sqlx::QueryBuilder<$db> {
            let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                "SELECT {} FROM audit WHERE TRUE",
                $crate::store::rows::AUDIT_COLUMNS
            ));
            let ints = [("seq >", f.after_seq), ("ts >=", f.since_ts), ("ts <", f.until_ts)];
            for (cond, v) in ints {
                if let Some(v) = v {
                    q.push(format_args!(" AND {cond} ")).push_bind(v);
                }
            }
            let texts = [
                ("org =", &f.org),
                ("principal =", &f.principal),
                ("tool =", &f.tool),
                ("decision =", &f.decision),
                ("kind =", &f.kind),
                ("call_id =", &f.call_id),
            ];
            for (cond, v) in texts {
                if let Some(v) = v {
                    q.push(format_args!(" AND {cond} ")).push_bind(v.as_str());
                }
            }
            q.push(" ORDER BY seq LIMIT ").push_bind(if f.limit > 0 { f.limit } else { i64::MAX });
            q
        }

        /// Holds for a batch of calls, in order: the budgets and their usage rows
        /// are read once, each request is admitted (all of its budgets fit) or
        /// denied in memory, and the new totals and holds are written back.
        pub(super) async fn hold_in(
            conn: &mut $conn,
            reqs: &[$crate::store::ledger::HoldRequest],
            period_start: fn(crate::calendar::Period, i64) -> Option<i64>,
        ) -> Result<Vec<$crate::store::ledger::HoldOutcome>, $crate::store::error::StoreError> {
            if reqs.is_empty() {
                return Ok(Vec::new());
            }
            let scopes = $crate::store::holds::scopes(reqs);
            let starts = $crate::store::holds::period_starts(reqs, period_start);
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "SELECT b.id, b.scope, b.org, b.unit, b.period, b.limit_amount, u.period_start, u.spent, u.held
                 FROM budgets b LEFT JOIN budget_usage u ON u.budget_id = b.id AND u.period_start IN (",
            );
            let mut sep = q.separated(", ");
            for st in &starts {
                sep.push_bind(*st);
            }
            q.push(") WHERE b.scope IN (");
            let mut sep = q.separated(", ");
            for scope in &scopes {
                sep.push_bind(*scope);
            }
            q.push(") ORDER BY b.id");
            let (budgets, totals) = $crate::store::holds::read_budgets(&q.build().fetch_all(&mut *conn).await?)?;
            let a = $crate::store::holds::admit(reqs, &budgets, totals, period_start);
            if a.admitted.is_empty() {
                return Ok(a.outcomes);
            }
            // New totals for every usage row touched, created if it is the period's first.
            let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO budget_usage (budget_id, period_start, spent, held) ");
            q.push_values(&a.usage, |mut b, (id, p, spent, held)| {
                b.push_bind(id).push_bind(*p).push_bind(*spent).push_bind(*held);
            });
            q.push(" ON CONFLICT (budget_id, period_start) DO UPDATE SET held = excluded.held");
            q.build().execute(&mut *conn).await?;
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO holds (id, owner, call_id, principal, tool, amount, tokens, state, created_at, expires_at, lines) ",
            );
            q.push_values(&a.admitted, |mut b, (n, lines)| {
                let r = &reqs[*n];
                b.push_bind(&r.hold_id)
                    .push_bind(&r.owner)
                    .push_bind(&r.call_id)
                    .push_bind(&r.principal)
                    .push_bind(&r.tool)
                    .push_bind(r.money)
                    .push_bind(r.tokens)
                    .push_bind("held")
                    .push_bind(r.now)
                    .push_bind(r.expires_at)
                    .push_bind($crate::store::holds::lines_json(lines));
            });
            q.build().execute(&mut *conn).await?;
            Ok(a.outcomes)
        }

        /// Resolves a batch of holds: each moves out of `held` at most once (a hold
        /// already resolved answers `false`), and its amounts move from held to
        /// spent (the charge, at most the amount held) on every budget it touched.
        pub(super) async fn resolve_in(conn: &mut $conn, rs: &[$crate::store::ledger::Resolution]) -> Result<Vec<bool>, $crate::store::error::StoreError> {
            if rs.is_empty() {
                return Ok(Vec::new());
            }
            let first = $crate::store::holds::first_of_each(rs);
            let winners: Vec<&$crate::store::ledger::Resolution> =
                rs.iter().enumerate().filter(|(i, r)| first[r.hold_id.as_str()] == *i).map(|(_, r)| r).collect();
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "UPDATE holds SET state = v.column2, charged = v.column3, charged_tokens = v.column4, resolved_at = v.column5 FROM (VALUES ",
            );
            let mut sep = q.separated(", ");
            for r in &winners {
                sep.push("(")
                    .push_bind_unseparated(&r.hold_id)
                    .push_unseparated(", ")
                    .push_bind_unseparated(r.state.as_str())
                    .push_unseparated(", ")
                    .push_bind_unseparated(r.charged)
                    .push_unseparated(", ")
                    .push_bind_unseparated(r.charged_tokens)
                    .push_unseparated(", ")
                    .push_bind_unseparated(r.now)
                    .push_unseparated(")");
            }
            q.push(") AS v WHERE holds.id = v.column1 AND holds.state = 'held' RETURNING holds.id, holds.lines");
            use $crate::store::rows::Cols as _;
        let mut done = std::collections::HashSet::new();
            let mut deltas = $crate::store::holds::Deltas::default();
            for row in q.build().fetch_all(&mut *conn).await? {
                let (hold, lines) = (row.text(0)?, row.text(1)?);
                if let Some(r) = winners.iter().find(|r| r.hold_id == *hold) {
                    deltas.add(&hold, &lines, r)?;
                }
                done.insert(hold);
            }
            if !deltas.0.is_empty() {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE budget_usage SET held = held - v.column3, spent = spent + v.column4 FROM (VALUES ",
                );
                let mut sep = q.separated(", ");
                for ((budget, start), (released, charged)) in &deltas.0 {
                    sep.push("(")
                        .push_bind_unseparated(budget)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*start)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*released)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*charged)
                        .push_unseparated(")");
                }
                q.push(") AS v WHERE budget_usage.budget_id = v.column1 AND budget_usage.period_start = v.column2");
                q.build().execute(&mut *conn).await?;
            }
            Ok(rs.iter().enumerate().map(|(i, r)| done.contains(r.hold_id.as_str()) && first[r.hold_id.as_str()] == i).collect())
        }
    };
}

/// Defines the audit chain's `append_audit` and `audit` on one backend,
/// beside its `ledger_statements!`: `chain_methods!(Sqlite)`.
macro_rules! chain_methods {
    ($backend:ty) => {
        impl $backend {
            /// Appends `drafts` to the chain in a write transaction: the
            /// writer lock is taken before the head is read, so two writers
            /// (the gateway and a CLI, say) never fork the chain.
            pub async fn append_audit(
                &self,
                drafts: &[$crate::store::audit::AuditDraft],
            ) -> Result<(), $crate::store::error::StoreError> {
                let mut tx = self.begin_write().await?;
                append_in(&mut tx, drafts, None).await?;
                tx.commit().await?;
                Ok(())
            }

            pub async fn audit(
                &self,
                f: &$crate::store::audit::AuditFilter,
            ) -> Result<Vec<$crate::store::audit::AuditRow>, $crate::store::error::StoreError> {
                let rows = audit_select(f).build().fetch_all(&self.pool).await?;
                rows.iter().map($crate::store::rows::audit).collect()
            }
        }
    };
}

pub(super) use chain_methods;
pub(super) use ledger_statements;
