//! Placement benchmarks (W1 in the project's benchmark list).
//!
//! * `evaluate_one`: one 3-container pod checked against one offer.
//! * `place_10k_on_5k`: 10,000 pending pods placed on 5,000 offers (each 4
//!   cpus, 16 GiB, ports 31000-32000), binpack and spread, one core.
//!
//! Run with `make bench`; the workload and machine are printed first.

use std::collections::HashMap;
use std::hint::black_box;

use divan::Bencher;
use km::mesos::proto::v1;
use km::offers::{Inventory, Matcher, Outcome, Policy};
use km::podtask::{ContainerDefaults, ExecutorConfig, ExecutorPrototype, PodTask, PodTaskConfig};
use km::resources::{self, Ranges};

#[path = "support/machine.rs"]
mod machine;

fn main() {
    println!(
        "{}\nworkload: 3-container pods (2 default-limited, 1 with 0.5 cpu/256Mi and one wildcard port); offers of 4 cpus, 16384 MB, ports 31000-32000; executor 0.25 cpu/128 MB",
        machine::describe()
    );
    divan::main();
}

fn offer(i: usize) -> v1::Offer {
    v1::Offer {
        id: v1::OfferId {
            value: format!("O-{i}"),
        },
        framework_id: v1::FrameworkId { value: "FW".into() },
        agent_id: v1::AgentId {
            value: format!("S-{i:05}"),
        },
        hostname: format!("agent-{i:05}"),
        resources: vec![
            resources::scalar("cpus", 4.0),
            resources::scalar("mem", 16384.0),
            resources::ranges("ports", &Ranges::from_pairs([(31000, 32000)])),
        ],
        ..Default::default()
    }
}

fn pod(i: usize) -> PodTask {
    let p = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "bench"},
        "spec": {"containers": [
            {"name": "app", "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}, "ports": [{"containerPort": 8080}]},
            {"name": "log"},
            {"name": "proxy"}
        ]}
    }))
    .unwrap();
    PodTask::from_pod(p, &PodTaskConfig::default()).unwrap()
}

fn executor() -> ExecutorPrototype {
    ExecutorPrototype::new(&ExecutorConfig::default(), &ContainerDefaults::default()).unwrap()
}

#[divan::bench]
fn evaluate_one(b: Bencher) {
    let exec = executor();
    let mut inv = Inventory::build(&[offer(0)], &exec, &HashMap::new());
    let m = Matcher::new(&mut inv, &exec, &["*".to_string()], Policy::BinPack);
    let p = pod(0);
    b.bench_local(|| black_box(m.evaluate(&mut inv, 0, black_box(&p))).is_ok());
}

#[divan::bench]
fn pod_to_task(b: Bencher) {
    let cfg = PodTaskConfig::default();
    let raw = pod(0).pod().expect("a fresh task carries its pod");
    b.with_inputs(|| raw.clone())
        .bench_local_values(|p| black_box(PodTask::from_pod(p, &cfg).is_ok()));
}

#[divan::bench(args = [Policy::BinPack, Policy::Spread], sample_count = 10, sample_size = 1)]
fn place_10k_on_5k(b: Bencher, policy: Policy) {
    let exec = executor();
    let offers: Vec<v1::Offer> = (0..5000).map(offer).collect();
    let pods: Vec<PodTask> = (0..10_000).map(pod).collect();
    let refs: Vec<&PodTask> = pods.iter().collect();
    let known = HashMap::new();
    b.with_inputs(|| Inventory::build(&offers, &exec, &known))
        .bench_local_values(|mut inv| {
            let mut m = Matcher::new(&mut inv, &exec, &["*".to_string()], policy);
            let out = m.place(&mut inv, &refs, false);
            assert!(out.iter().all(|o| matches!(o, Outcome::Placed(_))));
            black_box(out.len())
        });
}
