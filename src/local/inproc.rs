//! Roles that `km local` runs as tasks of its own process rather than as
//! child processes: the API server, the dev-master, the agents, the
//! controller manager and the proxy. They share one runtime and one copy of the binary's pages,
//! which is most of what a process of km costs in memory. Each is started
//! from the same command line a child would get, parsed by the role's own
//! flags, so both ways of running a part accept exactly the same options.

use std::future::Future;
use std::pin::Pin;

use anyhow::{Context, bail};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// A role's run, until its stop token is cancelled.
pub type RoleRun = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

#[derive(Parser)]
#[command(name = "km apiserver")]
struct ApiServer {
    #[command(flatten)]
    args: crate::apiserver::Args,
}

#[derive(Parser)]
#[command(name = "km dev-master")]
struct DevMaster {
    #[command(flatten)]
    args: crate::devcluster::master::Args,
}

#[derive(Parser)]
#[command(name = "km dev-agent")]
struct DevAgent {
    #[command(flatten)]
    args: crate::devcluster::agent::Args,
}

#[derive(Parser)]
#[command(name = "km controller-manager")]
struct ControllerManager {
    #[command(flatten)]
    args: crate::controller::Args,
}

#[derive(Parser)]
#[command(name = "km proxy")]
struct Proxy {
    #[command(flatten)]
    args: crate::proxy::Args,
}

/// Whether `role` (the first word of a part's command line) can run in
/// this process.
pub fn hostable(role: &str) -> bool {
    matches!(
        role,
        "apiserver" | "dev-master" | "dev-agent" | "controller-manager" | "proxy"
    )
}

/// The run of `km <args...>` as a future of this process, stopped by `stop`
/// (an agent also by `drain`, which shuts its executors down first, as
/// SIGUSR1 does to a dev-agent process). Fails, naming the flag, when the
/// command line does not parse.
pub fn role(
    args: &[String],
    stop: CancellationToken,
    drain: CancellationToken,
) -> anyhow::Result<RoleRun> {
    let Some(name) = args.first() else {
        bail!("an empty command line");
    };
    let argv = || std::iter::once(format!("km {name}")).chain(args[1..].iter().cloned());
    let what = || format!("km {name}: bad flags");
    Ok(match name.as_str() {
        "apiserver" => {
            let a = ApiServer::try_parse_from(argv()).with_context(what)?.args;
            Box::pin(crate::apiserver::run(a, stop))
        }
        "dev-master" => {
            let a = DevMaster::try_parse_from(argv()).with_context(what)?.args;
            Box::pin(crate::devcluster::master::run(a, stop))
        }
        "dev-agent" => {
            let a = DevAgent::try_parse_from(argv()).with_context(what)?.args;
            Box::pin(crate::devcluster::agent::serve(a, stop, drain))
        }
        "controller-manager" => {
            let a = ControllerManager::try_parse_from(argv())
                .with_context(what)?
                .args;
            Box::pin(crate::controller::run(a, stop))
        }
        "proxy" => {
            let a = Proxy::try_parse_from(argv()).with_context(what)?.args;
            Box::pin(crate::proxy::run(a, stop))
        }
        other => bail!("km {other} cannot run inside km local's process"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn hostable_roles_parse_their_own_flags() {
        let stop = CancellationToken::new();
        let role = |line: &str| role(&words(line), stop.clone(), stop.clone());
        assert!(role("dev-master --port 0").is_ok());
        assert!(role("dev-agent --master 127.0.0.1:5050").is_ok());
        let err = role("dev-master --no-such-flag")
            .err()
            .expect("an unknown flag is refused");
        assert!(format!("{err:#}").contains("--no-such-flag"), "{err:#}");
        assert!(role("scheduler").is_err());
        assert!(hostable("proxy") && hostable("dev-agent") && !hostable("scheduler"));
    }
}
