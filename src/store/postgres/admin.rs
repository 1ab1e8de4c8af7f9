//! Grants made through the admin API, their revisions, tool pins set by
//! admins, and the change counter other processes follow: the statements
//! of `store::admin_sql`, on Postgres.

crate::store::admin_sql::admin_statements!(super::Postgres, super::Conn);
