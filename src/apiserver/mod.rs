//! The pieces of `km apiserver` built so far (the role itself arrives with
//! its issue): request selectors.

pub mod selector;
