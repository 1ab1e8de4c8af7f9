//! Audit appends through SQLite's C API on the writer's own connection.
//!
//! Every sqlx statement on SQLite is a hand-off to the connection's worker
//! thread and back: a one-record append took about 100 µs through sqlx on
//! the 2-core machine of BENCHMARKS.md, of which SQLite's own work is about
//! 25 µs. A
//! governed call appends twice (intent, outcome) and waits for both, so the
//! hand-offs were most of what governance added to a call. Here the writer
//! locks its connection out of the worker once (sqlx's `lock_handle`, made
//! for direct API calls) and appends on the journal's task.
//!
//! Only what cannot wait is done here: small audit-only batches under
//! `durability = "normal"` (no fsync in a commit). The busy handler is off
//! while the handle is locked, so this code never sleeps on the runtime: a
//! write lock held elsewhere, a constraint failure (another writer moved the
//! chain) or any other error ends in [`Direct::release`] and the caller
//! appends through sqlx, which waits for the lock on its own thread.

use std::ffi::{CStr, CString, c_int};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;
use sqlx::SqliteConnection;
use sqlx::sqlite::LockedSqliteHandle;

use crate::store::audit::AuditRow;
use crate::store::rows;

/// Largest batch appended here (about 25 µs a record on the runtime's
/// thread); bigger ones (under load) go through sqlx, where one hand-off is
/// shared by the whole batch and the work is off the runtime's threads.
pub const MAX_ROWS: usize = 4;

/// The writer's connection, owned, with the locked handle while direct.
pub struct Direct {
    /// From `Box::into_raw`; reclaimed in `Drop`, after the lock is released.
    conn: NonNull<SqliteConnection>,
    locked: Option<Locked>,
    busy_timeout_ms: c_int,
}

struct Locked {
    /// Borrows `*conn` for as long as it lives: always dropped first.
    handle: LockedSqliteHandle<'static>,
    insert: NonNull<ffi::sqlite3_stmt>,
}

// SAFETY: `Direct` owns its connection alone (it was detached from the
// pool), and the raw statement belongs to that connection; whoever holds the
// `Direct` is the only user of either, on whatever thread. SQLite allows a
// connection on any thread as long as uses do not overlap.
unsafe impl Send for Direct {}

/// The append, with the columns in the order `Locked::insert` binds them.
fn insert_sql() -> CString {
    let sql = format!(
        "INSERT INTO audit ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        rows::AUDIT_COLUMNS
    );
    CString::new(sql).expect("no NUL in a constant statement")
}

/// Why a direct append did not happen; the caller appends through sqlx.
#[derive(Debug)]
pub struct Fallback(pub String);

impl Direct {
    pub fn new(conn: SqliteConnection, busy_timeout: std::time::Duration) -> Direct {
        let conn = NonNull::from(Box::leak(Box::new(conn)));
        let busy_timeout_ms = c_int::try_from(busy_timeout.as_millis()).unwrap_or(c_int::MAX);
        Direct { conn, locked: None, busy_timeout_ms }
    }

    /// The connection for sqlx, with the direct handle released first.
    pub fn sqlx(&mut self) -> &mut SqliteConnection {
        self.release();
        // SAFETY: the lock (the only other borrow of `*conn`) was just dropped.
        unsafe { self.conn.as_mut() }
    }

    /// Appends `rows` (already sealed after the cached head) in one
    /// transaction; on any failure nothing is written and the handle is
    /// released.
    pub async fn append(&mut self, rows: &[AuditRow]) -> Result<(), Fallback> {
        if self.locked.is_none() {
            self.lock().await?;
        }
        let result = match &self.locked {
            Some(l) => l.append(rows),
            None => Err(Fallback("not locked".into())),
        };
        if result.is_err() {
            self.release();
        }
        result
    }

    async fn lock(&mut self) -> Result<(), Fallback> {
        // SAFETY: no lock is held (checked by the caller), so this is the only
        // borrow of `*conn`; it is stored in `locked`, which is always dropped
        // before the connection is used otherwise or freed.
        let conn: &'static mut SqliteConnection = unsafe { &mut *self.conn.as_ptr() };
        let mut handle = conn.lock_handle().await.map_err(|e| Fallback(e.to_string()))?;
        let db = handle.as_raw_handle().as_ptr();
        let mut stmt = ptr::null_mut();
        let sql = insert_sql();
        // SAFETY: `db` is a live connection we hold the lock of; `sql` is
        // NUL-terminated; `stmt` is an out-pointer.
        let rc = unsafe {
            ffi::sqlite3_busy_timeout(db, 0);
            ffi::sqlite3_prepare_v3(db, sql.as_ptr(), -1, ffi::SQLITE_PREPARE_PERSISTENT, &mut stmt, ptr::null_mut())
        };
        match NonNull::new(stmt) {
            Some(insert) if rc == ffi::SQLITE_OK => {
                self.locked = Some(Locked { handle, insert });
                Ok(())
            }
            _ => {
                let e = error(db, rc);
                // SAFETY: as above; finalizing a null statement is a no-op.
                unsafe {
                    ffi::sqlite3_finalize(stmt);
                    ffi::sqlite3_busy_timeout(db, self.busy_timeout_ms);
                }
                Err(e)
            }
        }
    }

    /// Hands the connection back to sqlx's worker as it found it.
    pub fn release(&mut self) {
        if let Some(mut l) = self.locked.take() {
            let db = l.handle.as_raw_handle().as_ptr();
            // SAFETY: the statement is ours and not in use; `db` is locked.
            unsafe {
                ffi::sqlite3_finalize(l.insert.as_ptr());
                ffi::sqlite3_busy_timeout(db, self.busy_timeout_ms);
            }
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        self.release();
        // SAFETY: from `Box::leak` in `new`; the lock borrowing it is gone.
        drop(unsafe { Box::from_raw(self.conn.as_ptr()) });
    }
}

impl Locked {
    fn append(&self, rows: &[AuditRow]) -> Result<(), Fallback> {
        let db = self.db();
        let many = rows.len() > 1;
        if many {
            self.exec(c"BEGIN IMMEDIATE")?;
        }
        for row in rows {
            if let Err(e) = self.insert(row) {
                if many {
                    let _ = self.exec(c"ROLLBACK");
                }
                return Err(e);
            }
        }
        if many && let Err(e) = self.exec(c"COMMIT") {
            // SAFETY: `db` is locked. A failed COMMIT may leave the
            // transaction open; it must not outlive this call.
            if unsafe { ffi::sqlite3_get_autocommit(db) } == 0 {
                let _ = self.exec(c"ROLLBACK");
            }
            return Err(e);
        }
        Ok(())
    }

    fn db(&self) -> *mut ffi::sqlite3 {
        // SAFETY: the statement belongs to the locked connection.
        unsafe { ffi::sqlite3_db_handle(self.insert.as_ptr()) }
    }

    fn exec(&self, sql: &CStr) -> Result<(), Fallback> {
        let db = self.db();
        // SAFETY: `db` is locked; `sql` is NUL-terminated; no callback.
        let rc = unsafe { ffi::sqlite3_exec(db, sql.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(error(db, rc)) }
    }

    fn insert(&self, row: &AuditRow) -> Result<(), Fallback> {
        let stmt = self.insert.as_ptr();
        let text = |i: c_int, v: Option<&str>| -> c_int {
            // SAFETY: `stmt` is ours; SQLITE_TRANSIENT makes SQLite copy the
            // bytes before this returns, so `v` may be freed afterwards.
            unsafe {
                match v {
                    Some(s) => match c_int::try_from(s.len()) {
                        Ok(n) => ffi::sqlite3_bind_text(stmt, i, s.as_ptr().cast(), n, ffi::SQLITE_TRANSIENT()),
                        Err(_) => ffi::SQLITE_TOOBIG,
                    },
                    None => ffi::sqlite3_bind_null(stmt, i),
                }
            }
        };
        // SAFETY: `stmt` is ours.
        let int = |i: c_int, v: i64| unsafe { ffi::sqlite3_bind_int64(stmt, i, v) };
        let binds = [
            int(1, row.seq),
            text(2, Some(&row.id)),
            int(3, row.ts),
            text(4, Some(&row.kind)),
            text(5, row.call_id.as_deref()),
            text(6, row.org.as_deref()),
            text(7, row.principal.as_deref()),
            text(8, row.tool.as_deref()),
            text(9, row.decision.as_deref()),
            text(10, Some(&row.body)),
            text(11, Some(&row.prev_hash)),
            text(12, Some(&row.hash)),
        ];
        let rc = match binds.into_iter().find(|rc| *rc != ffi::SQLITE_OK) {
            Some(rc) => rc,
            // SAFETY: `stmt` is ours, fully bound.
            None => match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_DONE => ffi::SQLITE_OK,
                rc => rc,
            },
        };
        let failed = (rc != ffi::SQLITE_OK).then(|| error(self.db(), rc));
        // SAFETY: `stmt` is ours; reset so the next use starts clean (its
        // return value repeats the step's error, already taken).
        unsafe {
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
        }
        failed.map_or(Ok(()), Err)
    }
}

fn error(db: *mut ffi::sqlite3, rc: c_int) -> Fallback {
    // SAFETY: `db` is a live connection; the message is copied at once.
    let message = unsafe {
        let m = ffi::sqlite3_errmsg(db);
        if m.is_null() { String::new() } else { CStr::from_ptr(m).to_string_lossy().into_owned() }
    };
    Fallback(format!("sqlite error {rc}: {message}"))
}
