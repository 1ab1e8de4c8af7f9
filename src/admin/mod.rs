//! What admins change while the gateway runs: grants made through the API
//! ([`grants`]) and tool pins ([`pins`]), kept in the store and put in force
//! at once in this process and, through the store's change counter
//! ([`follow`]), in every other process on the same store.
//!
//! Every change commits with its revision and its audit record (who, the
//! diff) in one transaction. Everything here is confined to the acting
//! key's org; a resource of another org is "not found", never "forbidden",
//! so its existence does not leak.

pub mod grants;
pub mod pins;

mod error;
mod live;

pub use error::{Actor, AdminError};
pub use live::{Admin, FOLLOW_EVERY, follow, pins_of, reload};
