//! Spreading a VIP's new flows across its backends.
//!
//! - [`maglev`]: the Maglev lookup table, built here in userspace and handed
//!   to the XDP program, which only has to index it with a flow hash.
//! - [`backends`]: a balanced VIP's backends (health, drain, MAC) and the
//!   table built from the ones that take new flows.

pub mod backends;
pub mod maglev;

pub use backends::{BackendIds, BackendState, BalancedVip, TableUpdate};
