//! Spreading a VIP's new flows across its backends.
//!
//! - [`maglev`]: the Maglev lookup table, built here in userspace and handed
//!   to the XDP program, which only has to index it with a flow hash.

pub mod maglev;
