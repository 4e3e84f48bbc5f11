//! The deployment controller (being written).

use tokio_util::sync::CancellationToken;

use super::Context;

/// Runs the deployment controller until `stop`.
pub async fn run(_ctx: Context, _stop: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("the deployment controller is not built yet")
}
