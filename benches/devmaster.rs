//! dev-master benchmarks (W3 in the project's benchmark list).
//!
//! * `allocation_cycle`: one allocation cycle offering 5,000 hollow agents
//!   (4 cpus, 16 GiB, ports 31000-32000 each) to one subscribed framework.
//!   Anchor: Apache Mesos's allocator needs 1.06 s per cycle at 10,000
//!   agents × 1,000 frameworks; target here ≤ 100 ms.
//! * status-update round trip on loopback, over real HTTP: an agent's UPDATE
//!   → dev-master → km's scheduler client → ACKNOWLEDGE → back to the agent's
//!   stream. 2,000 round trips, p50/p99/max printed. Target: p99 ≤ 2 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use divan::Bencher;
use km::devcluster::master::state::{AgentKind, Conn, Master};
use km::mesos::encoding::Encoding;
use km::mesos::proto::v1;
use km::resources::text::parse_resources;

#[path = "support/machine.rs"]
mod machine;

fn main() {
    println!(
        "{}\nworkload: N hollow agents of cpus:4;mem:16384;ports:[31000-32000], one framework, one allocation cycle",
        machine::describe()
    );
    // `cargo bench` passes --bench; under `cargo test` a short run checks the code path.
    let benching = std::env::args().any(|a| a == "--bench");
    round_trip_report(if benching { 2000 } else { 20 });
    divan::main();
}

/// Times status-update round trips through a dev-master on loopback.
fn round_trip_report(n: usize) {
    use futures::StreamExt;
    use km::devcluster::master::{self, AGENT_ID_HEADER};
    use km::mesos::detector::MasterAddress;
    use km::mesos::proto::devcluster::{AgentCall, AgentEvent, agent_call, agent_event};
    use km::mesos::scheduler::{self, SchedulerConfig, SchedulerEvent};
    use km::mesos::stream::events;

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let args = master::Args {
            ip: "127.0.0.1".parse().unwrap(),
            port: 0,
            hostname: None,
            allocation_interval: Duration::from_secs(3600),
            agent_timeout: Duration::from_secs(75),
            credentials: None,
            hollow_agents: 0,
            hollow_resources: String::new(),
            hollow_attributes: String::new(),
            hollow_task_delay: Duration::from_millis(1),
        };
        let m = master::start(args, stop.clone()).await.unwrap();
        let url = format!("http://{}/api/v1/km/agent", m.addr);
        let enc = Encoding::Protobuf;
        scheduler::install_crypto_provider();
        let http = reqwest::Client::new();
        // The "agent": registers and reads its event stream.
        let reg = AgentCall {
            r#type: Some(agent_call::Type::Register as i32),
            register: Some(agent_call::Register {
                agent_info: v1::AgentInfo { hostname: "bench".into(), ..Default::default() },
                executors: vec![],
            }),
            ..Default::default()
        };
        let resp = http
            .post(&url)
            .header("Content-Type", enc.content_type())
            .header("Accept", enc.content_type())
            .body(enc.encode(&reg))
            .send()
            .await
            .unwrap();
        let mut agent_events = Box::pin(events::<AgentEvent, _, _, _>(resp.bytes_stream(), enc, 1 << 20));
        let first = agent_events.next().await.unwrap().unwrap();
        let agent_id = first.registered.unwrap().agent_id.value;
        // The framework, through km's scheduler client.
        let (tx, masters) = tokio::sync::watch::channel(Some(MasterAddress { base: format!("http://{}", m.addr), info: None }));
        let fw = v1::FrameworkInfo { user: "root".into(), name: "bench".into(), ..Default::default() };
        let (sched, mut rx) = scheduler::start(SchedulerConfig::new(fw), masters).unwrap();
        let framework_id = loop {
            if let Some(SchedulerEvent::Subscribed { framework_id, .. }) = rx.recv().await {
                break framework_id;
            }
        };
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 100 {
            let uuid = uuid::Uuid::new_v4().as_bytes().to_vec();
            let status = v1::TaskStatus {
                task_id: v1::TaskId { value: format!("t{i}") },
                state: v1::TaskState::TaskRunning as i32,
                source: Some(v1::task_status::Source::Executor as i32),
                uuid: Some(uuid.clone()),
                ..Default::default()
            };
            let call = AgentCall {
                r#type: Some(agent_call::Type::Update as i32),
                agent_id: Some(v1::AgentId { value: agent_id.clone() }),
                update: Some(agent_call::Update { framework_id: framework_id.clone(), status, latest_state: None }),
                ..Default::default()
            };
            let t0 = Instant::now();
            let r = http
                .post(&url)
                .header("Content-Type", enc.content_type())
                .header(AGENT_ID_HEADER, &agent_id)
                .body(enc.encode(&call))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            let update = loop {
                match rx.recv().await.unwrap() {
                    SchedulerEvent::Event(e) if e.update.is_some() => break e.update.unwrap().status,
                    _ => {}
                }
            };
            sched.acknowledge(&update).await.unwrap();
            loop {
                let ev = agent_events.next().await.unwrap().unwrap();
                if ev.r#type == Some(agent_event::Type::Acknowledge as i32) && ev.acknowledge.as_ref().unwrap().uuid == uuid {
                    break;
                }
            }
            if i >= 100 {
                samples.push(t0.elapsed());
            }
        }
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        println!(
            "status_update_round_trip (agent UPDATE -> dev-master -> km scheduler client -> ACKNOWLEDGE -> agent), {n} round trips over HTTP on loopback: \
             p50 {:?}, p99 {:?}, max {:?}",
            pct(0.50),
            pct(0.99),
            samples[samples.len() - 1]
        );
        sched.stop();
        drop(tx);
        stop.cancel();
    });
}

fn cluster(agents: usize) -> (Master, tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>) {
    let info = v1::MasterInfo {
        id: "M".into(),
        ip: 0,
        port: 5050,
        ..Default::default()
    };
    let mut m = Master::new(info, Duration::from_secs(75));
    let resources = parse_resources("cpus:4;mem:16384;ports:[31000-32000]").unwrap();
    for i in 0..agents {
        let a = v1::AgentInfo {
            hostname: format!("hollow-{i:05}"),
            resources: resources.clone(),
            ..Default::default()
        };
        m.register_agent(
            a,
            vec![],
            None,
            AgentKind::Hollow {
                delay: Duration::from_millis(100),
            },
        );
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let fw = v1::FrameworkInfo {
        user: "root".into(),
        name: "bench".into(),
        ..Default::default()
    };
    m.subscribe(
        None,
        fw,
        Conn {
            tx,
            encoding: Encoding::Protobuf,
            stream_id: "s".into(),
        },
    );
    (m, rx)
}

#[divan::bench(args = [1000, 5000], sample_count = 10, sample_size = 1)]
fn allocation_cycle(b: Bencher, agents: usize) {
    b.with_inputs(|| cluster(agents))
        .bench_local_values(|(mut m, rx)| {
            let n = m.allocate(Instant::now());
            assert_eq!(n, agents);
            black_box(rx)
        });
}
