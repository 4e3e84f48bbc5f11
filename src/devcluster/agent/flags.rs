//! `km dev-agent` flags. Resources (`cpus:4;mem:8192;ports:[31000-32000];cpus(web):2`)
//! and attributes (`rack:a;zone:1`) use Mesos's text syntax, parsed by
//! [`crate::resources::text`] exactly as dev-master parses its hollow
//! agents' (a role makes a static reservation). Resources the flag does not
//! name (cpus, mem, disk, ports) are filled in from the machine, as a Mesos
//! agent does.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args as ClapArgs;

use super::duration;
use crate::mesos::proto::v1;
use crate::resources::text::{self, TextError};
use crate::resources::{self, Ranges, Resources};

/// The attributes syntax, shown in attribute parse errors.
pub const ATTRIBUTES_SYNTAX: &str = "attributes look like 'rack:a;zone:1' (name:value pairs; a value is text, a number, [ranges] or {set})";

/// Development stand-in for mesos-agent: registers with `km dev-master`,
/// launches executors as processes in cgroups and serves the v1 executor API.
#[derive(ClapArgs, Clone, Debug)]
pub struct Args {
    /// The master: host:port or http(s)://host:port.
    #[arg(long, env = "KM_MASTER", value_name = "HOST:PORT|URL")]
    pub master: String,
    /// Resources this agent offers, in Mesos syntax; unnamed cpus, mem, disk and ports come from the machine [default: all cpus, memory less 1 GB, free disk, ports 31000-32000].
    #[arg(long, env = "KM_RESOURCES", value_name = "RESOURCES", value_parser = parse_resources)]
    pub resources: Option<ResourceList>,
    /// Attributes of this agent, in Mesos syntax, e.g. 'rack:a;zone:1'.
    #[arg(long, env = "KM_ATTRIBUTES", value_name = "ATTRIBUTES", value_parser = parse_attributes)]
    pub attributes: Option<AttributeList>,
    /// Hostname to advertise [default: the system hostname].
    #[arg(long, env = "KM_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,
    /// Address the executor API listens on (and executors are told to use).
    #[arg(long, env = "KM_IP", default_value = "127.0.0.1", value_name = "IP")]
    pub ip: IpAddr,
    /// Port of the executor API; 0 picks a free one.
    #[arg(long, env = "KM_PORT", default_value_t = 5051, value_name = "PORT")]
    pub port: u16,
    /// Directory for sandboxes and checkpoints.
    #[arg(
        long,
        env = "KM_WORK_DIR",
        default_value = "/var/tmp/km-agent",
        value_name = "DIR"
    )]
    pub work_dir: PathBuf,
    /// Time an executor gets to exit after SHUTDOWN before it is killed (ExecutorInfo.shutdown_grace_period overrides it).
    #[arg(long, env = "KM_EXECUTOR_SHUTDOWN_GRACE_PERIOD", default_value = "5secs", value_name = "DURATION", value_parser = parse_duration)]
    pub executor_shutdown_grace_period: Duration,
    /// Time an executor has to SUBSCRIBE after it was started before it is killed.
    #[arg(long, env = "KM_EXECUTOR_REGISTRATION_TIMEOUT", default_value = "1mins", value_name = "DURATION", value_parser = parse_duration)]
    pub executor_registration_timeout: Duration,
    /// After an agent restart, time checkpointed executors have to SUBSCRIBE again (at most 15secs); also MESOS_SUBSCRIPTION_BACKOFF_MAX.
    #[arg(long, env = "KM_EXECUTOR_REREGISTRATION_TIMEOUT", default_value = "2secs", value_name = "DURATION", value_parser = parse_reregistration_timeout)]
    pub executor_reregistration_timeout: Duration,
    /// Time executors of checkpointing frameworks wait for a restarted agent before they give up (MESOS_RECOVERY_TIMEOUT).
    #[arg(long, env = "KM_RECOVERY_TIMEOUT", default_value = "15mins", value_name = "DURATION", value_parser = parse_duration)]
    pub recovery_timeout: Duration,
    /// Parent cgroup (in each of the cpu and memory hierarchies) of the executors' cgroups.
    #[arg(
        long,
        env = "KM_CGROUPS_ROOT",
        default_value = "km-agent",
        value_name = "NAME"
    )]
    pub cgroups_root: String,
    /// Run executors without cgroups (no cpu or memory limits).
    #[arg(long, env = "KM_NO_CGROUPS")]
    pub no_cgroups: bool,
    /// Environment of executors as a JSON object of strings [default: the agent's own environment, less KM_* variables].
    #[arg(long, env = "KM_EXECUTOR_ENVIRONMENT_VARIABLES", value_name = "JSON", value_parser = parse_environment)]
    pub executor_environment_variables: Option<EnvironmentMap>,
}

/// Parsed `--resources`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceList(pub Vec<v1::Resource>);

/// Parsed `--attributes`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeList(pub Vec<v1::Attribute>);

/// Parsed `--executor-environment-variables`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentMap(pub Vec<(String, String)>);

/// A flag value in the wrong syntax. The message quotes the offending part
/// and shows the expected syntax (clap adds the flag's name).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlagError {
    /// A `--resources` entry is malformed.
    #[error("resource {0}")]
    Resource(#[source] TextError),
    /// An `--attributes` entry is malformed.
    #[error("attribute {0}; {ATTRIBUTES_SYNTAX}")]
    Attribute(#[source] TextError),
    /// `--resources` names nothing.
    #[error("no resources given; expected e.g. 'cpus:4;mem:8192;disk:10000;ports:[31000-32000]'")]
    NoResources,
    /// A duration is malformed or out of range.
    #[error("{0}")]
    Duration(String),
    /// `--executor-environment-variables` is not a JSON object of strings.
    #[error(
        "{0}; expected a JSON object whose values are strings, e.g. '{{\"PATH\":\"/usr/bin:/bin\"}}'"
    )]
    Environment(String),
}

/// The clap value parser of `--resources`: Mesos's text syntax (see
/// [`crate::resources::text`]); entries naming the same resource add up.
pub fn parse_resources(text: &str) -> Result<ResourceList, FlagError> {
    let parsed = text::parse_resources(text).map_err(FlagError::Resource)?;
    if parsed.is_empty() {
        return Err(FlagError::NoResources);
    }
    Ok(ResourceList(Resources::from_vec(parsed).into_vec()))
}

/// The clap value parser of `--attributes`.
pub fn parse_attributes(text: &str) -> Result<AttributeList, FlagError> {
    text::parse_attributes(text)
        .map(AttributeList)
        .map_err(FlagError::Attribute)
}

/// The clap value parser of duration flags.
pub fn parse_duration(text: &str) -> Result<Duration, FlagError> {
    duration::parse(text).map_err(|e| FlagError::Duration(e.to_string()))
}

/// Mesos caps `--executor_reregistration_timeout` at 15 seconds.
pub const MAX_REREGISTRATION_TIMEOUT: Duration = Duration::from_secs(15);

fn parse_reregistration_timeout(text: &str) -> Result<Duration, FlagError> {
    let d = parse_duration(text)?;
    if d > MAX_REREGISTRATION_TIMEOUT {
        return Err(FlagError::Duration(format!(
            "{text:?} exceeds the maximum of 15secs"
        )));
    }
    Ok(d)
}

/// The clap value parser of `--executor-environment-variables`.
pub fn parse_environment(text: &str) -> Result<EnvironmentMap, FlagError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| FlagError::Environment(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| FlagError::Environment("not a JSON object".into()))?;
    let mut out = Vec::new();
    for (k, v) in obj {
        let s = v
            .as_str()
            .ok_or_else(|| FlagError::Environment(format!("the value of {k:?} is not a string")))?;
        out.push((k.clone(), s.to_owned()));
    }
    Ok(EnvironmentMap(out))
}

/// What the machine has, for the resources the flag leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineResources {
    /// Online CPUs.
    pub cpus: f64,
    /// Total memory in MB.
    pub mem_total_mb: f64,
    /// Free disk under the work directory in MB, if known.
    pub disk_free_mb: Option<f64>,
}

impl MachineResources {
    /// Reads the CPU count, `/proc/meminfo` and `df` of `work_dir` (or its
    /// nearest existing ancestor).
    pub fn detect(work_dir: &Path) -> MachineResources {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mem_total_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| meminfo_total_mb(&t))
            .unwrap_or(1024.0);
        MachineResources {
            cpus,
            mem_total_mb,
            disk_free_mb: disk_free_mb(work_dir),
        }
    }
}

fn meminfo_total_mb(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).floor())
}

fn disk_free_mb(work_dir: &Path) -> Option<f64> {
    let dir = work_dir.ancestors().find(|p| p.exists())?;
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kb: f64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some((kb / 1024.0).floor())
}

/// The agent's total resources: the given ones, plus for each of cpus, mem,
/// disk and ports that is not named, the machine's: all CPUs, total memory
/// less 1 GB (at least half of it), free disk less min(5 GB, half), ports
/// 31000-32000.
pub fn total_resources(
    given: Option<&ResourceList>,
    machine: &MachineResources,
) -> Vec<v1::Resource> {
    let mut total = Resources::from_vec(given.map(|g| g.0.clone()).unwrap_or_default());
    let named = |n: &str| total.iter().any(|r| r.name == n);
    let mut extra = Vec::new();
    if !named("cpus") {
        extra.push(resources::scalar("cpus", machine.cpus));
    }
    if !named("mem") {
        let mem = machine.mem_total_mb;
        let mem = if mem > 2048.0 {
            mem - 1024.0
        } else {
            mem / 2.0
        };
        extra.push(resources::scalar("mem", mem.floor()));
    }
    if !named("disk")
        && let Some(disk) = machine.disk_free_mb
    {
        let reserve = (disk / 2.0).min(5120.0);
        extra.push(resources::scalar("disk", (disk - reserve).floor()));
    }
    if !named("ports") {
        extra.push(resources::ranges("ports", &Ranges::span(31000, 32000)));
    }
    for r in &extra {
        total.add(r);
    }
    total.into_vec()
}

/// The system hostname (`/proc/sys/kernel/hostname`, else `hostname`).
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::process::Command::new("hostname")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::reservation_role;

    fn res(text: &str) -> Vec<v1::Resource> {
        parse_resources(text).unwrap().0
    }

    fn find<'a>(rs: &'a [v1::Resource], name: &str, role: &str) -> &'a v1::Resource {
        rs.iter()
            .find(|r| r.name == name && reservation_role(r) == role)
            .unwrap_or_else(|| panic!("no {name}({role}) in {rs:?}"))
    }

    #[test]
    fn resources_in_mesos_syntax() {
        let rs = res("cpus:4;mem:8192;disk:10000;ports:[31000-32000]");
        assert_eq!(rs.len(), 4);
        assert_eq!(find(&rs, "cpus", "*").scalar.unwrap().value, 4.0);
        assert_eq!(find(&rs, "mem", "*").scalar.unwrap().value, 8192.0);
        assert_eq!(find(&rs, "disk", "*").scalar.unwrap().value, 10000.0);
        let ports = Ranges::from_proto(find(&rs, "ports", "*").ranges.as_ref().unwrap());
        assert_eq!(ports, Ranges::span(31000, 32000));
    }

    #[test]
    fn roles_and_repeated_resources() {
        let rs = res("cpus(web):2; cpus:1.5 ;cpus:0.5;mem(a/b):64");
        assert_eq!(find(&rs, "cpus", "web").scalar.unwrap().value, 2.0);
        assert_eq!(find(&rs, "cpus", "*").scalar.unwrap().value, 2.0);
        assert_eq!(find(&rs, "mem", "a/b").scalar.unwrap().value, 64.0);
    }

    #[test]
    fn resource_errors_quote_the_entry_and_show_the_syntax() {
        for bad in ["cpus", "cpus:x", "cpus:-1", "ports:[5-1]", "ports:[a-b]"] {
            let e = parse_resources(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad:?} gave {e}");
            assert!(e.contains("expected e.g. 'cpus:4"), "{bad:?} gave {e}");
        }
        assert_eq!(parse_resources(" ; "), Err(FlagError::NoResources));
    }

    #[test]
    fn attributes_text_and_scalar() {
        let attrs = parse_attributes("rack:a;zone:1").unwrap().0;
        assert_eq!(attrs[0].r#type, v1::value::Type::Text as i32);
        assert_eq!(attrs[0].text.as_ref().unwrap().value, "a");
        assert_eq!(attrs[1].r#type, v1::value::Type::Scalar as i32);
        assert_eq!(attrs[1].scalar.unwrap().value, 1.0);
        let e = parse_attributes("rack").unwrap_err().to_string();
        assert!(e.contains("\"rack\"") && e.contains("rack:a;zone:1"), "{e}");
    }

    #[test]
    fn durations_and_environment() {
        assert_eq!(parse_duration("5secs"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5").is_err());
        assert!(parse_reregistration_timeout("16secs").is_err());
        assert_eq!(
            parse_environment(r#"{"A":"1","PATH":"/bin"}"#).unwrap().0,
            [
                ("A".to_owned(), "1".to_owned()),
                ("PATH".to_owned(), "/bin".to_owned())
            ]
        );
        assert!(parse_environment(r#"{"A":1}"#).is_err());
        assert!(parse_environment("[]").is_err());
    }

    #[test]
    fn machine_defaults_fill_what_is_not_named() {
        let machine = MachineResources {
            cpus: 2.0,
            mem_total_mb: 24_000.0,
            disk_free_mb: Some(100_000.0),
        };
        let rs = total_resources(None, &machine);
        assert_eq!(find(&rs, "cpus", "*").scalar.unwrap().value, 2.0);
        assert_eq!(find(&rs, "mem", "*").scalar.unwrap().value, 22_976.0);
        assert_eq!(find(&rs, "disk", "*").scalar.unwrap().value, 94_880.0);
        let given = parse_resources("cpus:8;cpus(web):1").unwrap();
        let rs = total_resources(Some(&given), &machine);
        assert_eq!(find(&rs, "cpus", "*").scalar.unwrap().value, 8.0);
        assert_eq!(find(&rs, "cpus", "web").scalar.unwrap().value, 1.0);
        assert!(rs.iter().any(|r| r.name == "ports"));
        assert_eq!(
            meminfo_total_mb("MemTotal:       24684544 kB\n"),
            Some(24106.0)
        );
    }

    #[test]
    fn clap_names_the_flag_in_errors() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let e = Cli::try_parse_from(["km", "--master", "m:5050", "--resources", "cpus:x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--resources"), "{e}");
        assert!(e.contains("not a number"), "{e}");
        let e = Cli::try_parse_from([
            "km",
            "--master",
            "m:5050",
            "--executor-shutdown-grace-period",
            "5",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--executor-shutdown-grace-period"), "{e}");
        let ok = Cli::try_parse_from(["km", "--master", "m:5050"]).unwrap();
        assert_eq!(ok.args.port, 5051);
        assert_eq!(
            ok.args.executor_shutdown_grace_period,
            Duration::from_secs(5)
        );
        assert_eq!(ok.args.recovery_timeout, Duration::from_secs(900));
    }
}
