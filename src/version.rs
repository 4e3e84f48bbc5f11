//! The version km reports.

/// `km <version> (commit <git commit>)`.
pub fn long() -> String {
    format!(
        "km {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("KM_GIT_COMMIT")
    )
}
