//! The matcher's rules, including the original k8sm's (§4.3-4.4 of the
//! reference) where km keeps them, and its fixes where it does not.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::podtask::{ContainerDefaults, ExecutorConfig, PodTaskConfig};
use crate::resources::Resources;

fn exec() -> ExecutorPrototype {
    ExecutorPrototype::new(&ExecutorConfig::default(), &ContainerDefaults::default()).unwrap()
}

#[allow(deprecated)] // the legacy `role` field is what pre-refinement offers carry
fn res_role(name: &str, v: f64, role: &str) -> v1::Resource {
    let mut r = resources::scalar(name, v);
    if role != "*" {
        r.role = Some(role.to_string());
    }
    r
}

fn ports(lo: u64, hi: u64) -> v1::Resource {
    resources::ranges("ports", &Ranges::from_pairs([(lo, hi)]))
}

fn offer(id: &str, agent: &str, host: &str, res: Vec<v1::Resource>) -> v1::Offer {
    v1::Offer {
        id: v1::OfferId { value: id.into() },
        framework_id: v1::FrameworkId { value: "FW".into() },
        agent_id: v1::AgentId {
            value: agent.into(),
        },
        hostname: host.into(),
        resources: res,
        ..Default::default()
    }
}

fn basic(id: &str, host: &str, cpus: f64, mem: f64) -> v1::Offer {
    offer(
        id,
        &format!("S-{host}"),
        host,
        vec![
            res_role("cpus", cpus, "*"),
            res_role("mem", mem, "*"),
            ports(31000, 31010),
        ],
    )
}

fn pod_with(cfg: &PodTaskConfig, v: serde_json::Value) -> PodTask {
    PodTask::from_pod(serde_json::from_value(v).unwrap(), cfg).unwrap()
}

/// A pod of `cpus`/`mem` (MB) with `ports` wildcard container ports.
fn pod(name: &str, cpus: f64, mem: f64, nports: usize) -> PodTask {
    let ps: Vec<_> = (0..nports)
        .map(|i| json!({"containerPort": 8000 + i}))
        .collect();
    pod_with(
        &PodTaskConfig::default(),
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "ports": ps,
            "resources": {"limits": {"cpu": format!("{}m", (cpus * 1000.0) as i64), "memory": format!("{mem}Mi")}}}]}}),
    )
}

fn run(offers: &[v1::Offer], pods: &[&PodTask], policy: Policy) -> (Inventory, Vec<Outcome>) {
    place_all(
        offers,
        pods,
        &exec(),
        &HashMap::new(),
        &["*".to_string()],
        policy,
        true,
    )
}

fn placed(o: &Outcome) -> &Assignment {
    match o {
        Outcome::Placed(a) => a,
        Outcome::Unplaced(u) => panic!("not placed: {}", u.summary),
    }
}

fn unplaced(o: &Outcome) -> &Unplaced {
    match o {
        Outcome::Unplaced(u) => u,
        Outcome::Placed(a) => panic!("placed on slot {}", a.slot),
    }
}

fn scalar_of(rs: &[v1::Resource], name: &str) -> f64 {
    rs.iter()
        .filter(|r| r.name == name)
        .map(|r| r.scalar.as_ref().unwrap().value)
        .sum()
}

#[test]
fn several_pods_share_one_offer() {
    let o = [basic("O1", "a", 4.0, 4096.0)];
    let (p1, p2, p3) = (
        pod("p1", 1.0, 512.0, 1),
        pod("p2", 1.0, 512.0, 1),
        pod("p3", 1.0, 512.0, 1),
    );
    let (inv, out) = run(&o, &[&p1, &p2, &p3], Policy::BinPack);
    let a: Vec<_> = out.iter().map(placed).collect();
    assert!(a[0].launches_executor && !a[1].launches_executor && !a[2].launches_executor);
    assert_eq!(
        a[0].executor, a[1].executor,
        "every task carries the identical ExecutorInfo"
    );
    let hp: Vec<u16> = a.iter().map(|x| x.host_ports[0].host_port).collect();
    assert_eq!(hp, [31000, 31001, 31002]);
    // 4 - 0.25 executor - 3 pods
    assert_eq!(inv.slots()[0].free_cpus(), 0.75);
    assert_eq!(inv.slots()[0].free_mem(), 4096.0 - 128.0 - 3.0 * 512.0);
}

#[test]
fn the_first_offer_of_a_new_agent_is_usable_with_node_selectors() {
    let mut o = basic("O1", "a", 4.0, 4096.0);
    o.attributes.push(v1::Attribute {
        name: "rack".into(),
        r#type: v1::value::Type::Text as i32,
        text: Some(v1::value::Text { value: "b".into() }),
        ..Default::default()
    });
    let p = pod_with(
        &PodTaskConfig::default(),
        json!({"metadata": {"name": "p"}, "spec": {"nodeSelector": {"k8s.mesosphere.io/attribute-rack": "b"}, "containers": [{"name": "c"}]}}),
    );
    let (_, out) = run(&[o.clone()], &[&p], Policy::BinPack);
    placed(&out[0]);
    let q = pod_with(
        &PodTaskConfig::default(),
        json!({"metadata": {"name": "q"}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "z"}, "containers": [{"name": "c"}]}}),
    );
    let (_, out) = run(&[o], &[&q], Policy::BinPack);
    assert_eq!(
        unplaced(&out[0]).summary,
        "1 offer: nodeSelector kubernetes.io/hostname=z"
    );
}

#[test]
fn node_name_pins_the_pod_to_that_agent() {
    let o = [basic("O1", "a", 4.0, 4096.0), basic("O2", "b", 4.0, 4096.0)];
    let p = pod_with(
        &PodTaskConfig::default(),
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": "b", "containers": [{"name": "c"}]}}),
    );
    let (inv, out) = run(&o, &[&p], Policy::BinPack);
    assert_eq!(inv.slots()[placed(&out[0]).slot].hostname, "b");
    let p = pod_with(
        &PodTaskConfig::default(),
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": "c", "containers": [{"name": "c"}]}}),
    );
    let (_, out) = run(&o, &[&p], Policy::BinPack);
    assert_eq!(unplaced(&out[0]).summary, "2 offers: spec.nodeName is c");
}

#[test]
fn roles_are_consumed_in_preference_order_and_mixed() {
    // Original rule: with roles "public,*", public is used first, then *.
    let o = offer(
        "O1",
        "S1",
        "a",
        vec![
            res_role("cpus", 0.5, "*"),
            res_role("cpus", 1.5, "public"),
            res_role("mem", 2048.0, "public"),
            ports(31000, 31000),
        ],
    );
    let cfg = PodTaskConfig {
        framework_roles: vec!["*".into(), "public".into()],
        ..Default::default()
    };
    let p = pod_with(
        &cfg,
        json!({"metadata": {"name": "p", "annotations": {"k8s.mesosphere.io/roles": "public,*"}},
               "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1700m", "memory": "1Gi"}}}]}}),
    );
    let ex = exec();
    let known = HashMap::from([("S1".to_string(), ex.info_unreserved())]);
    let mut o2 = o.clone();
    o2.executor_ids.push(v1::ExecutorId {
        value: ex.id().to_string(),
    });
    let (_, out) = place_all(
        &[o2],
        &[&p],
        &ex,
        &known,
        &cfg.framework_roles,
        Policy::BinPack,
        true,
    );
    let a = placed(&out[0]);
    let by_role: Vec<(String, f64)> = a
        .resources
        .iter()
        .filter(|r| r.name == "cpus")
        .map(|r| {
            (
                resources::reservation_role(r).to_string(),
                r.scalar.as_ref().unwrap().value,
            )
        })
        .collect();
    assert_eq!(
        by_role,
        [("public".to_string(), 1.5), ("*".to_string(), 0.2)]
    );
    assert!(!a.launches_executor);
    // A pod limited to "*" does not touch public resources.
    let q = pod_with(
        &cfg,
        json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}}),
    );
    let (_, out) = place_all(
        &[o],
        &[&q],
        &ex,
        &HashMap::new(),
        &cfg.framework_roles,
        Policy::BinPack,
        true,
    );
    assert!(
        unplaced(&out[0]).summary.contains("insufficient cpus"),
        "{}",
        unplaced(&out[0]).summary
    );
}

#[test]
fn task_resources_keep_the_offered_metadata() {
    let mut cpus = res_role("cpus", 2.0, "*");
    cpus.allocation_info = Some(v1::resource::AllocationInfo {
        role: Some("k8s".into()),
    });
    let o = offer("O1", "S1", "a", vec![cpus, res_role("mem", 1024.0, "*")]);
    let p = pod("p", 1.0, 100.0, 0);
    let (_, out) = run(&[o], &[&p], Policy::BinPack);
    let a = placed(&out[0]);
    let c = a.resources.iter().find(|r| r.name == "cpus").unwrap();
    assert_eq!(
        c.allocation_info.as_ref().unwrap().role.as_deref(),
        Some("k8s")
    );
    assert_eq!(c.scalar.as_ref().unwrap().value, 1.0);
}

#[test]
fn fixed_host_ports_must_be_offered() {
    let cfg = PodTaskConfig::default();
    let p = pod_with(
        &cfg,
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
    );
    let o = [basic("O1", "a", 4.0, 4096.0), basic("O2", "b", 4.0, 4096.0)];
    let (_, out) = run(&o, &[&p], Policy::BinPack);
    assert_eq!(
        unplaced(&out[0]).summary,
        "2 offers: host port 8080 not offered"
    );
    let p = pod_with(
        &cfg,
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 31005}]}]}}),
    );
    let q = p.clone();
    let (_, out) = run(&o[..1], &[&p, &q], Policy::BinPack);
    assert_eq!(placed(&out[0]).host_ports[0].host_port, 31005);
    assert_eq!(
        unplaced(&out[1]).summary,
        "1 offer: host port 31005 not offered"
    );
}

#[test]
fn wildcard_ports_skip_ports_taken_by_fixed_ones() {
    let cfg = PodTaskConfig::default();
    let p = pod_with(
        &cfg,
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": [
            {"containerPort": 80}, {"containerPort": 81, "hostPort": 31000}, {"containerPort": 82}]}]}}),
    );
    let (_, out) = run(&[basic("O1", "a", 4.0, 4096.0)], &[&p], Policy::BinPack);
    let mut got: Vec<(i32, u16)> = placed(&out[0])
        .host_ports
        .iter()
        .map(|h| (h.container_port, h.host_port))
        .collect();
    got.sort();
    assert_eq!(got, [(80, 31001), (81, 31000), (82, 31002)]);
    let many = pod("many", 0.1, 32.0, 12);
    let (_, out) = run(&[basic("O1", "a", 4.0, 4096.0)], &[&many], Policy::BinPack);
    assert_eq!(
        unplaced(&out[0]).summary,
        "1 offer: not enough free ports (want 12, largest 11)"
    );
}

#[test]
fn executor_resources_are_charged_once_per_agent() {
    // 1.0 cpu: pod 0.75 + executor 0.25 fits; the next 0.75 pod does not.
    let o = [basic("O1", "a", 1.0, 4096.0)];
    let (p, q) = (pod("p", 0.75, 64.0, 0), pod("q", 0.75, 64.0, 0));
    let (_, out) = run(&o, &[&p, &q], Policy::BinPack);
    let a = placed(&out[0]);
    assert_eq!(scalar_of(&a.executor.resources, "cpus"), 0.25);
    assert_eq!(scalar_of(&a.executor.resources, "mem"), 128.0);
    assert_eq!(
        unplaced(&out[1]).summary,
        "1 offer: insufficient cpus (want 0.75, largest 0.0)"
    );
    let big = pod("big", 0.9, 64.0, 0);
    let (_, out) = run(&o, &[&big], Policy::BinPack);
    assert_eq!(
        unplaced(&out[0]).summary,
        "1 offer: insufficient cpus for the pod and a new km executor (want 0.9 + 0.25, largest 1.0)"
    );
}

#[test]
fn a_running_executor_of_unknown_shape_is_reported() {
    let ex = exec();
    let mut o = basic("O1", "a", 4.0, 4096.0);
    o.executor_ids.push(v1::ExecutorId {
        value: ex.id().to_string(),
    });
    let p = pod("p", 0.5, 64.0, 0);
    let (_, out) = place_all(
        &[o],
        &[&p],
        &ex,
        &HashMap::new(),
        &["*".into()],
        Policy::BinPack,
        true,
    );
    assert!(
        unplaced(&out[0])
            .summary
            .contains("runs there but its ExecutorInfo is unknown")
    );
}

#[test]
fn binpack_fills_agents_in_order_and_prefers_running_executors() {
    let ex = exec();
    let mut c = basic("O3", "c", 2.0, 4096.0);
    c.executor_ids.push(v1::ExecutorId {
        value: ex.id().to_string(),
    });
    let known = HashMap::from([("S-c".to_string(), ex.info_unreserved())]);
    let o = [
        basic("O1", "a", 2.0, 4096.0),
        basic("O2", "b", 2.0, 4096.0),
        c,
    ];
    let pods: Vec<PodTask> = (0..4)
        .map(|i| pod(&format!("p{i}"), 0.8, 64.0, 0))
        .collect();
    let refs: Vec<&PodTask> = pods.iter().collect();
    let (inv, out) = place_all(
        &o,
        &refs,
        &ex,
        &known,
        &["*".into()],
        Policy::BinPack,
        false,
    );
    let hosts: Vec<&str> = out
        .iter()
        .map(|x| inv.slots()[placed(x).slot].hostname.as_str())
        .collect();
    // c runs the executor already (2 pods fit), then a: 2.0 - 0.25 executor holds 2 more.
    assert_eq!(hosts, ["c", "c", "a", "a"]);
}

#[test]
fn spread_prefers_the_most_free_cpus() {
    let o = [
        basic("O1", "a", 2.0, 4096.0),
        basic("O2", "b", 3.0, 4096.0),
        basic("O3", "c", 3.0, 4096.0),
    ];
    let pods: Vec<PodTask> = (0..4)
        .map(|i| pod(&format!("p{i}"), 0.5, 64.0, 0))
        .collect();
    let refs: Vec<&PodTask> = pods.iter().collect();
    let (inv, out) = run(&o, &refs, Policy::Spread);
    let hosts: Vec<&str> = out
        .iter()
        .map(|x| inv.slots()[placed(x).slot].hostname.as_str())
        .collect();
    // b and c tie at 3.0 (leftmost wins); each then has 2.25 left, more than a.
    assert_eq!(hosts, ["b", "c", "b", "c"]);
}

#[test]
fn offers_of_one_agent_are_combined() {
    let o = [
        offer("O1", "S1", "a", vec![res_role("cpus", 1.0, "*")]),
        offer(
            "O2",
            "S1",
            "a",
            vec![res_role("cpus", 1.0, "*"), res_role("mem", 1024.0, "*")],
        ),
    ];
    let p = pod("p", 1.5, 256.0, 0);
    let (inv, out) = run(&o, &[&p], Policy::BinPack);
    let a = placed(&out[0]);
    assert_eq!(inv.slots()[a.slot].offer_ids, ["O1", "O2"]);
    assert_eq!(scalar_of(&a.resources, "cpus"), 1.5);
}

fn arb_offer() -> impl Strategy<Value = v1::Offer> {
    (
        0u32..6,
        0u32..8,
        0u32..4096,
        31000u64..31020,
        0u64..8,
        prop::bool::ANY,
    )
        .prop_map(|(agent, cpus_q, mem, lo, n, reserved)| {
            let mut res = vec![
                res_role("cpus", f64::from(cpus_q) * 0.5, "*"),
                res_role("mem", f64::from(mem), "*"),
                ports(lo, lo + n),
            ];
            if reserved {
                res.push(res_role("cpus", 1.0, "public"));
            }
            offer(
                &format!("O-{agent}-{cpus_q}-{mem}-{lo}"),
                &format!("S{agent}"),
                &format!("h{agent}"),
                res,
            )
        })
}

fn arb_pod() -> impl Strategy<Value = PodTask> {
    (1u32..2000, 32u32..1024, 0usize..3, prop::option::of(31000u16..31030), prop::bool::ANY).prop_map(|(mcpu, mem, wild, fixed, public)| {
        let mut ps: Vec<serde_json::Value> = (0..wild).map(|i| json!({"containerPort": 8000 + i})).collect();
        if let Some(h) = fixed {
            ps.push(json!({"containerPort": 9000, "hostPort": h}));
        }
        let mut ann = serde_json::Map::new();
        if public {
            ann.insert("k8s.mesosphere.io/roles".into(), json!("public,*"));
        }
        let cfg = PodTaskConfig { framework_roles: vec!["*".into(), "public".into()], ..Default::default() };
        pod_with(
            &cfg,
            json!({"metadata": {"name": "p", "annotations": ann}, "spec": {"containers": [{"name": "c", "ports": ps,
                "resources": {"limits": {"cpu": format!("{mcpu}m"), "memory": format!("{mem}Mi")}}}]}}),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the pods and offers, the resources given to tasks and
    /// executors on an agent are contained in that agent's offers, and no
    /// host port is given twice.
    #[test]
    fn placements_never_exceed_offers(offers in prop::collection::vec(arb_offer(), 0..8),
                                      pods in prop::collection::vec(arb_pod(), 0..20),
                                      spread in prop::bool::ANY) {
        // Mesos never offers the same resource twice: one offer per agent here.
        let mut seen = std::collections::HashSet::new();
        let offers: Vec<v1::Offer> = offers.into_iter().filter(|o| seen.insert(o.agent_id.value.clone())).collect();
        let refs: Vec<&PodTask> = pods.iter().collect();
        let policy = if spread { Policy::Spread } else { Policy::BinPack };
        let fw = ["*".to_string(), "public".to_string()];
        let (inv, out) = place_all(&offers, &refs, &exec(), &HashMap::new(), &fw, policy, false);
        for (si, slot) in inv.slots().iter().enumerate() {
            let offered: Resources = offers.iter().filter(|o| o.agent_id.value == slot.agent_id)
                .flat_map(|o| o.resources.iter().cloned()).collect();
            let mut used = Resources::new();
            let mut host_ports = std::collections::HashSet::new();
            let mut executors = 0;
            for o in &out {
                if let Outcome::Placed(a) = o && a.slot == si {
                    for r in &a.resources { used.add(r); }
                    if a.launches_executor {
                        executors += 1;
                        for r in &a.executor.resources { used.add(r); }
                    }
                    for h in &a.host_ports {
                        prop_assert!(host_ports.insert(h.host_port), "port {} given twice", h.host_port);
                    }
                }
            }
            prop_assert!(executors <= 1, "executor launched {executors} times on {}", slot.agent_id);
            prop_assert!(offered.contains(&used), "used {used} not within offered {offered}");
        }
    }
}
