//! `km fit`: does a pod fit these Mesos offers, and if not, why?
//!
//! It runs the scheduler's own path — [`PodTask::from_pod`], the offers
//! [`Matcher`], [`launch::build`] — on a pod manifest and a file of offers, and
//! prints per agent whether the pod fits and why not, then the task km would
//! launch. Offers listing km's executor id are assumed to run an executor
//! with unreserved base resources.
//!
//! Exit status: 0 the pod fits, 1 it fits nowhere, 2 bad input.
//!
//! `-o json` prints one document:
//!
//! | field | meaning |
//! | --- | --- |
//! | `fits` | bool |
//! | `offer_id` | first offer of the chosen agent, or null |
//! | `offer_ids` | every offer of the chosen agent (one ACCEPT takes them all) |
//! | `agent_id`, `hostname` | the chosen agent, or null |
//! | `task` | the TaskInfo in Mesos JSON, or null |
//! | `executor` | the ExecutorInfo in Mesos JSON when this task starts the executor, else null |
//! | `host_ports` | list of `{container, container_port, protocol, host_port}` |
//! | `reasons` | list of `{offer_id, reason}` for every offer the pod does not fit |
//! | `summary` | one line over all offers, as in `FailedScheduling` events |
//! | `pod` | the pod as sent to the executor, or null |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args as ClapArgs, ValueEnum};
use serde_json::{Value, json};

use crate::flags::MatchingFlags;
use crate::mesos::json as mjson;
use crate::mesos::proto::v1;
use crate::offers::{Inventory, Matcher, Outcome};
use crate::podtask::launch::{self, Placement};
use crate::podtask::{PodTask, TaskId};

/// Flags of `km fit`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Pod manifest, YAML or JSON.
    #[arg(long, value_name = "POD.yaml")]
    pub pod: PathBuf,
    /// Mesos v1 offers in Mesos JSON: one Offer, an array of Offers, or an OFFERS event.
    #[arg(long, value_name = "OFFERS.json")]
    pub offers: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The scheduler's matching flags.
    #[command(flatten)]
    pub matching: MatchingFlags,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON document (see `km fit --help`).
    Json,
}

/// Bad input: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Runs `km fit`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let matching = args
        .matching
        .build()
        .map_err(|e| InputError(e.to_string()))?;
    let pod = read_pod(&args.pod)?;
    let offers = read_offers(&args.offers)?;
    let task = PodTask::from_pod(pod, &matching.podtask)
        .map_err(|e| InputError(format!("{}: {e}", args.pod.display())))?;

    let exec = &matching.executor;
    let known: HashMap<String, v1::ExecutorInfo> = offers
        .iter()
        .filter(|o| o.executor_ids.iter().any(|e| e.value == exec.id().as_str()))
        .map(|o| (o.agent_id.value.clone(), exec.info_unreserved()))
        .collect();
    let mut inv = Inventory::build(&offers, exec, &known);
    let mut matcher = Matcher::new(
        &mut inv,
        exec,
        &matching.podtask.framework_roles,
        matching.policy,
    );
    let verdicts: Vec<_> = (0..inv.slots().len())
        .map(|i| matcher.evaluate(&mut inv, i, &task))
        .collect();
    let outcome = matcher.place_one(&mut inv, &task, false);

    let mut reasons = Vec::new();
    let mut lines = vec![format!(
        "pod {} wants cpus {}, mem {} MB, {} host port(s) ({} mapping), roles {}",
        task.key,
        task.limits.cpus,
        task.limits.mem_mb,
        task.ports.len(),
        task.port_mapping,
        task.roles.join(",")
    )];
    for (slot, verdict) in inv.slots().iter().zip(&verdicts) {
        let what = match verdict {
            Ok(()) => "fits".to_string(),
            Err(r) => {
                for id in &slot.offer_ids {
                    reasons.push(json!({"offer_id": id, "reason": r.for_one()}));
                }
                r.for_one()
            }
        };
        lines.push(format!(
            "offer {} on {} (agent {}): {what}",
            slot.offer_ids.join(", "),
            slot.hostname,
            slot.agent_id
        ));
    }
    if inv.slots().is_empty() {
        lines.push("no offers".into());
    }
    let doc = match outcome {
        Outcome::Unplaced(u) => {
            lines.push(format!("does not fit: {}", u.summary));
            json!({"fits": false, "offer_id": null, "offer_ids": [], "agent_id": null, "hostname": null,
                   "task": null, "executor": null, "host_ports": [], "reasons": reasons,
                   "summary": u.summary, "pod": null})
        }
        Outcome::Placed(a) => {
            let slot = &inv.slots()[a.slot];
            let task_id = TaskId::generate();
            let launches = a.launches_executor;
            let host_ports = a.host_ports.clone();
            let l = launch::build(
                &task,
                Placement {
                    task_id: &task_id,
                    agent_id: &slot.agent_id,
                    hostname: &slot.hostname,
                    offer_id: &slot.offer_ids[0],
                    resources: a.resources,
                    host_ports: a.host_ports,
                    executor: a.executor,
                },
            )
            .ok_or_else(|| anyhow::anyhow!("internal error: the pod task lost its pod"))?;
            let task_json = mjson::to_value(&l.task);
            let exec_json = if launches {
                l.task.executor.as_ref().map(mjson::to_value)
            } else {
                None
            };
            lines.push(format!(
                "chosen: offer {} on {} ({} policy{})",
                slot.offer_ids.join(", "),
                slot.hostname,
                matching.policy,
                if launches {
                    ", starts the km executor"
                } else {
                    ""
                }
            ));
            if !host_ports.is_empty() {
                lines.push("host ports:".into());
                for hp in &host_ports {
                    lines.push(format!(
                        "  container {} port {}/{} -> host port {} (role {})",
                        hp.container, hp.container_port, hp.protocol, hp.host_port, hp.role
                    ));
                }
            }
            let mut shown = task_json.clone();
            if let Some(d) = shown.get_mut("data") {
                *d = Value::String(format!(
                    "<base64 of the pod below, {} bytes of JSON>",
                    l.task.data.as_ref().map_or(0, Vec::len)
                ));
            }
            lines.push(format!("task (Mesos JSON):\n{}", pretty(&shown)));
            if let Some(e) = &exec_json {
                lines.push(format!(
                    "executor (Mesos JSON, launched with this task):\n{}",
                    pretty(e)
                ));
            }
            lines.push(format!(
                "pod as sent to the executor:\n{}",
                pretty(&serde_json::to_value(&l.pod)?)
            ));
            let ports: Vec<Value> = host_ports
                .iter()
                .map(|h| {
                    json!({"container": h.container, "container_port": h.container_port,
                                 "protocol": h.protocol, "host_port": h.host_port})
                })
                .collect();
            json!({"fits": true, "offer_id": slot.offer_ids[0], "offer_ids": slot.offer_ids,
                   "agent_id": slot.agent_id, "hostname": slot.hostname,
                   "task": task_json, "executor": exec_json, "host_ports": ports,
                   "reasons": reasons, "summary": "", "pod": serde_json::to_value(&l.pod)?})
        }
    };
    let fits = doc["fits"] == json!(true);
    match args.output {
        Output::Json => println!("{}", pretty(&doc)),
        Output::Text => println!("{}", lines.join("\n")),
    }
    Ok(if fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path)
        .map_err(|e| InputError(format!("{}: cannot read: {e}", path.display())))
}

fn read_pod(path: &Path) -> Result<k8s_openapi::api::core::v1::Pod, InputError> {
    crate::manifest::parse_pod(&read(path)?)
        .map_err(|e| InputError(format!("{}: {e}", path.display())))
}

/// Reads offers: one Offer, an array of Offers, an OFFERS event, or its
/// `offers` payload.
pub fn read_offers(path: &Path) -> Result<Vec<v1::Offer>, InputError> {
    let text = read(path)?;
    let bad = |m: String| InputError(format!("{}: {m}", path.display()));
    let value: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let (items, prefix): (Vec<&Value>, &str) = match &value {
        Value::Array(a) => (a.iter().collect(), ""),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("OFFERS") => {
            let list = o
                .get("offers")
                .and_then(|x| x.get("offers"))
                .and_then(Value::as_array);
            let list = list.ok_or_else(|| {
                bad("an OFFERS event needs offers.offers, a list of offers".into())
            })?;
            (list.iter().collect(), "offers.offers")
        }
        Value::Object(o) if o.get("offers").is_some_and(Value::is_array) => (
            o["offers"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            "offers",
        ),
        Value::Object(_) => (vec![&value], ""),
        _ => {
            return Err(bad(
                "expected an Offer object, an array of offers, or an OFFERS event".into(),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = if prefix.is_empty() && !value.is_array() { String::new() } else { format!("{prefix}[{i}]") };
            let o: v1::Offer = mjson::from_value(v).map_err(|e| match e {
                mjson::JsonError::MissingRequired(f) => bad(format!(
                    "{at}{}missing required field(s) {} (a Mesos v1 Offer needs id, framework_id, agent_id and hostname)",
                    if at.is_empty() { "" } else { ": " },
                    f.join(", ")
                )),
                e => bad(format!("{at}{}{e}", if at.is_empty() { "" } else { "." })),
            })?;
            Ok(o)
        })
        .collect()
}
