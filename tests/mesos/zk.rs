//! `zk://` master detection against a real ZooKeeper server.
//!
//! Each test starts its own standalone ZooKeeper (Debian's `zookeeper`
//! package, installed by `scripts/test-deps.sh`) with
//! `java -cp /usr/share/java/zookeeper.jar org.apache.zookeeper.server.ZooKeeperServerMain <cfg>`
//! on a free port and a temporary data directory; the server is killed when
//! the test ends, pass or fail. Masters are played by ZooKeeper sessions that
//! create ephemeral sequential `json.info_` nodes, as Mesos masters do.

use std::fs;
use std::io::Read as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use km::mesos::detector::{MasterAddress, MasterSpec, detect};
use tokio::sync::watch;
use zookeeper_client as zk;

use crate::support::free_port;

/// Debian's ZooKeeper jar; its manifest `Class-Path` names its dependencies.
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Optional: silences slf4j's "no binding" warning.
const SLF4J_NOP_JAR: &str = "/usr/share/java/slf4j-nop.jar";

/// How long any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(5);

/// A standalone ZooKeeper server, killed on drop.
struct ZooKeeper {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl ZooKeeper {
    fn start() -> ZooKeeper {
        ZooKeeper::start_on(free_port())
    }

    fn start_on(port: u16) -> ZooKeeper {
        assert!(
            Path::new(ZOOKEEPER_JAR).exists(),
            "ZooKeeper is not installed ({ZOOKEEPER_JAR} is missing): run scripts/test-deps.sh \
             (`make test` does), or `apt-get install zookeeper`"
        );
        let dir = tempfile::tempdir().expect("temporary directory for ZooKeeper");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("ZooKeeper data directory");
        let config = dir.path().join("zoo.cfg");
        fs::write(
            &config,
            format!(
                "tickTime=500\n\
                 dataDir={}\n\
                 clientPort={port}\n\
                 clientPortAddress=127.0.0.1\n\
                 maxSessionTimeout=20000\n\
                 admin.enableServer=false\n",
                data.display()
            ),
        )
        .expect("write zoo.cfg");
        let mut classpath = ZOOKEEPER_JAR.to_string();
        if Path::new(SLF4J_NOP_JAR).exists() {
            classpath = format!("{classpath}:{SLF4J_NOP_JAR}");
        }
        let log = fs::File::create(dir.path().join("zookeeper.log")).expect("ZooKeeper log");
        let child = Command::new("java")
            .args([
                "-Xms32m",
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                &classpath,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("ZooKeeper log"))
            .stderr(log)
            .spawn()
            .expect("start ZooKeeper with `java` (is a JRE installed? scripts/test-deps.sh installs one)");
        let mut server = ZooKeeper { child, port, dir };
        server.wait_until_listening(Duration::from_secs(15));
        server
    }

    fn wait_until_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ZooKeeper exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "ZooKeeper did not listen on 127.0.0.1:{} within {limit:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(self.dir.path().join("zookeeper.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spec(&self, path: &str) -> MasterSpec {
        zk_spec(self.port, path)
    }

    /// A new ZooKeeper session (one per simulated master).
    async fn session(&self) -> zk::Client {
        let deadline = Instant::now() + WAIT;
        let servers = self.connect_string();
        loop {
            let connect = zk::Client::connector()
                .with_session_timeout(Duration::from_secs(6))
                .with_fail_eagerly()
                .connect(&servers);
            match tokio::time::timeout(WAIT, connect).await {
                Ok(Ok(client)) => return client,
                Ok(Err(error)) if Instant::now() < deadline => {
                    eprintln!("ZooKeeper not ready yet: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                outcome => panic!(
                    "cannot open a ZooKeeper session: {outcome:?}\n{}",
                    self.log()
                ),
            }
        }
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn zk_spec(port: u16, path: &str) -> MasterSpec {
    format!("zk://127.0.0.1:{port}{path}")
        .parse()
        .expect("valid zk:// spec")
}

/// A `MasterInfo` as Mesos 1.12 writes it into its `json.info_` node.
fn master_json(id: &str, port: u16) -> Vec<u8> {
    format!(
        r#"{{"address":{{"hostname":"localhost","ip":"127.0.0.1","port":{port}}},"capabilities":[{{"type":"AGENT_UPDATE"}},{{"type":"AGENT_DRAINING"}},{{"type":"QUOTA_V2"}}],"hostname":"localhost","id":"{id}","ip":16777343,"pid":"master@127.0.0.1:{port}","port":{port},"version":"1.12.0"}}"#
    )
    .into_bytes()
}

/// Joins the election under `path` like a Mesos master; returns the node's path.
async fn join(session: &zk::Client, path: &str, id: &str, port: u16) -> (String, i64) {
    let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let prefix = format!("{path}/json.info_");
    let (_, sequence) = session
        .create(&prefix, &master_json(id, port), &options)
        .await
        .unwrap_or_else(|e| panic!("create {prefix}: {e}"));
    (format!("{prefix}{sequence}"), sequence.into_i64())
}

async fn mkdir(session: &zk::Client, path: &str) {
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    session
        .create(path, b"", &options)
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
}

/// Waits (bounded) until the receiver holds a leader with `base`, or none.
async fn wait_for(
    rx: &mut watch::Receiver<Option<MasterAddress>>,
    base: Option<&str>,
) -> Option<MasterAddress> {
    let wanted = |leader: &Option<MasterAddress>| leader.as_ref().map(|l| l.base.as_str()) == base;
    let outcome = tokio::time::timeout(WAIT, rx.wait_for(wanted))
        .await
        .map(|waited| waited.map(|leader| leader.clone()));
    match outcome {
        Ok(Ok(leader)) => leader,
        Ok(Err(_)) => panic!("the detector stopped while waiting for {base:?}"),
        Err(_) => panic!(
            "the leader did not become {base:?} within {WAIT:?}; it is {:?}",
            *rx.borrow()
        ),
    }
}

/// Asserts that the receiver reports no change for `quiet`.
async fn assert_unchanged(rx: &mut watch::Receiver<Option<MasterAddress>>, quiet: Duration) {
    if let Ok(changed) = tokio::time::timeout(quiet, rx.changed()).await {
        panic!(
            "the leader changed unexpectedly ({changed:?}) to {:?}",
            *rx.borrow()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zk_detector_follows_leader_changes() {
    let server = ZooKeeper::start();
    let admin = server.session().await;
    mkdir(&admin, "/mesos").await;
    // The replicated log keeps its replicas beside the election members.
    mkdir(&admin, "/mesos/log_replicas").await;

    let master_a = server.session().await;
    let (node_a, seq_a) = join(&master_a, "/mesos", "master-a", 15050).await;

    let mut rx = detect(&server.spec("/mesos")).await.expect("detect");
    let leader = wait_for(&mut rx, Some("http://127.0.0.1:15050")).await;
    let info = leader
        .and_then(|l| l.info)
        .expect("the leader's MasterInfo");
    assert_eq!(info.id, "master-a");
    assert_eq!(info.version.as_deref(), Some("1.12.0"));

    // B joins as a standby: a later sequence, so A stays the leader.
    let master_b = server.session().await;
    let (_, seq_b) = join(&master_b, "/mesos", "master-b", 15051).await;
    assert!(
        seq_b > seq_a,
        "sequence numbers only grow: {seq_a} then {seq_b}"
    );
    assert_unchanged(&mut rx, Duration::from_millis(500)).await;
    assert_eq!(
        rx.borrow().as_ref().map(|l| l.base.clone()).as_deref(),
        Some("http://127.0.0.1:15050")
    );

    // A's node goes away, as when A dies: B leads.
    master_a
        .delete(&node_a, None)
        .await
        .expect("delete A's node");
    let leader = wait_for(&mut rx, Some("http://127.0.0.1:15051")).await;
    assert_eq!(
        leader.and_then(|l| l.info).map(|i| i.id).as_deref(),
        Some("master-b")
    );

    // B's session closes and its ephemeral node vanishes: no leader.
    drop(master_b);
    wait_for(&mut rx, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zk_detector_yields_none_until_a_leader_appears() {
    // The detector starts before ZooKeeper does and keeps reconnecting.
    let port = free_port();
    let mut rx = detect(&zk_spec(port, "/mesos")).await.expect("detect");
    assert_eq!(*rx.borrow(), None);
    assert_unchanged(&mut rx, Duration::from_millis(300)).await;

    // ZooKeeper is up, but neither the path nor a member exists yet.
    let server = ZooKeeper::start_on(port);
    assert_unchanged(&mut rx, Duration::from_millis(700)).await;

    let admin = server.session().await;
    mkdir(&admin, "/mesos").await;
    assert_unchanged(&mut rx, Duration::from_millis(500)).await;
    assert_eq!(*rx.borrow(), None);

    let master = server.session().await;
    join(&master, "/mesos", "master-c", 15052).await;
    let leader = wait_for(&mut rx, Some("http://127.0.0.1:15052")).await;
    assert_eq!(
        leader.and_then(|l| l.info).map(|i| i.id).as_deref(),
        Some("master-c")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_framework_id_survives_in_zookeeper() {
    use km::scheduler::framework_id::Store;
    let server = ZooKeeper::start();
    let admin = server.session().await;
    let store = Store::ZooKeeper {
        servers: server.connect_string(),
        path: "/mesos/k8sm/Kubernetes".into(),
    };
    assert_eq!(store.load().await.unwrap(), None, "nothing stored yet");
    store.save("fw-1").await.unwrap();
    assert_eq!(store.load().await.unwrap().as_deref(), Some("fw-1"));
    store.save("fw-2").await.unwrap();
    assert_eq!(store.load().await.unwrap().as_deref(), Some("fw-2"));
    // Readable by anyone operating the ensemble, where the docs say.
    let (data, _) = admin.get_data("/mesos/k8sm/Kubernetes").await.unwrap();
    assert_eq!(data, b"fw-2");
    store.remove().await.unwrap();
    assert_eq!(store.load().await.unwrap(), None);
    store.remove().await.unwrap();
    let down = Store::ZooKeeper {
        servers: format!("127.0.0.1:{}", free_port()),
        path: "/k8sm/x".into(),
    };
    let e = down.load().await.unwrap_err().to_string();
    assert!(e.contains("ZooKeeper 127.0.0.1:"), "{e}");
}
