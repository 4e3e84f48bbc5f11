//! dev-master benchmarks (W3 in the project's benchmark list).
//!
//! * `allocation_cycle`: one allocation cycle offering 5,000 hollow agents
//!   (4 cpus, 16 GiB, ports 31000-32000 each) to one subscribed framework.
//!   Anchor: Apache Mesos's allocator needs 1.06 s per cycle at 10,000
//!   agents × 1,000 frameworks; target here ≤ 100 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use divan::Bencher;
use km::devcluster::master::state::{AgentKind, Conn, Master};
use km::mesos::encoding::Encoding;
use km::mesos::proto::v1;
use km::resources::text::parse_resources;

fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "machine: {} cpus, {cpu}\nworkload: N hollow agents of cpus:4;mem:16384;ports:[31000-32000], one framework, one allocation cycle",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    divan::main();
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
