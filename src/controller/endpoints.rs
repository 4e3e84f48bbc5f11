//! The endpoints controller (being written).

use tokio_util::sync::CancellationToken;

use super::Context;

/// Runs the endpoints controller until `stop`.
pub async fn run(_ctx: Context, _stop: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("the endpoints controller is not built yet")
}
