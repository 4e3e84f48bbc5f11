//! The nodes controller (being written).

use tokio_util::sync::CancellationToken;

use super::Context;

/// Runs the nodes controller until `stop`.
pub async fn run(_ctx: Context, _stop: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("the nodes controller is not built yet")
}
