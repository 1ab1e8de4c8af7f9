//! Grants made through the admin API, their revisions, tool pins set by
//! admins, and the change counter other processes follow: the statements
//! of `store::admin_sql`, on Sqlite.

crate::store::admin_sql::admin_statements!(super::Sqlite, super::Conn);
