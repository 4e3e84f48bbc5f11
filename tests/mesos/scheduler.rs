//! km's scheduler client against km dev-master: a framework's whole session
//! (offers, launch, status, acknowledge, kill, reconcile) and a failover.

use std::time::Duration;

use km::devcluster::master;
use km::mesos::detector::MasterAddress;
use km::mesos::encoding::Encoding;
use km::mesos::proto::v1::{self, scheduler::event};
use km::mesos::scheduler::{self, SchedulerConfig, SchedulerEvent};
use km::resources::text::parse_resources;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

async fn dev_master(hollow: u32) -> (master::Running, CancellationToken) {
    let stop = CancellationToken::new();
    let args = master::Args {
        ip: "127.0.0.1".parse().unwrap(),
        port: 0,
        hostname: None,
        allocation_interval: Duration::from_millis(100),
        agent_timeout: Duration::from_secs(5),
        credentials: None,
        hollow_agents: hollow,
        hollow_resources: "cpus:4;mem:4096;ports:[31000-31010]".into(),
        hollow_attributes: "rack:a".into(),
        hollow_task_delay: Duration::from_millis(20),
    };
    (master::start(args, stop.clone()).await.unwrap(), stop)
}

fn framework(id: Option<&str>) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        user: "root".into(),
        name: "km-test".into(),
        id: id.map(|i| v1::FrameworkId { value: i.into() }),
        failover_timeout: Some(60.0),
        checkpoint: Some(true),
        ..Default::default()
    }
}

fn connect(
    addr: std::net::SocketAddr,
    fw: v1::FrameworkInfo,
    encoding: Encoding,
) -> (scheduler::Scheduler, mpsc::Receiver<SchedulerEvent>) {
    let base = format!("http://{addr}");
    // km::mesos::detector::detect for an http master gives exactly this.
    let (tx, rx) = watch::channel(Some(MasterAddress { base, info: None }));
    tokio::spawn(async move { tx.closed().await });
    let mut cfg = SchedulerConfig::new(fw);
    cfg.encoding = encoding;
    scheduler::start(cfg, rx).unwrap()
}

/// The next event matching `pick`, skipping others; panics after 10 s.
async fn next<T>(
    rx: &mut mpsc::Receiver<SchedulerEvent>,
    what: &str,
    mut pick: impl FnMut(&SchedulerEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("event channel closed waiting for {what}"));
        if let Some(t) = pick(&ev) {
            return t;
        }
    }
}

fn offers(ev: &SchedulerEvent) -> Option<Vec<v1::Offer>> {
    match ev {
        SchedulerEvent::Event(e) => e.offers.as_ref().map(|o| o.offers.clone()),
        _ => None,
    }
}

fn update(state: v1::TaskState) -> impl FnMut(&SchedulerEvent) -> Option<v1::TaskStatus> {
    move |ev| match ev {
        SchedulerEvent::Event(e) if e.r#type == Some(event::Type::Update as i32) => e
            .update
            .as_ref()
            .map(|u| u.status.clone())
            .filter(|s| s.state == state as i32),
        _ => None,
    }
}

fn command_task(id: &str, offer: &v1::Offer) -> v1::offer::Operation {
    v1::offer::Operation {
        r#type: Some(v1::offer::operation::Type::Launch as i32),
        launch: Some(v1::offer::operation::Launch {
            task_infos: vec![v1::TaskInfo {
                name: id.into(),
                task_id: v1::TaskId { value: id.into() },
                agent_id: offer.agent_id.clone(),
                resources: parse_resources("cpus:0.5;mem:64").unwrap(),
                command: Some(v1::CommandInfo {
                    value: Some("sleep 1000".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }),
        ..Default::default()
    }
}

async fn session(encoding: Encoding) {
    let (m, stop) = dev_master(2).await;
    let (s, mut rx) = connect(m.addr, framework(None), encoding);
    let fid = next(&mut rx, "SUBSCRIBED", |e| match e {
        SchedulerEvent::Subscribed { framework_id, .. } => Some(framework_id.clone()),
        _ => None,
    })
    .await;
    assert_eq!(s.framework_id(), Some(fid));
    let offers = next(&mut rx, "OFFERS", offers).await;
    assert!(offers.iter().all(|o| o.hostname.starts_with("hollow-")));
    let o = &offers[0];
    assert!(o.attributes.iter().any(|a| a.name == "rack"));
    s.accept(vec![o.id.clone()], vec![command_task("t1", o)], None)
        .await
        .unwrap();
    let running = next(&mut rx, "TASK_RUNNING", update(v1::TaskState::TaskRunning)).await;
    assert_eq!(running.agent_id.as_ref(), Some(&o.agent_id));
    assert!(
        s.acknowledge(&running).await.unwrap(),
        "updates with a uuid are acknowledged"
    );
    s.kill(
        v1::TaskId { value: "t1".into() },
        Some(o.agent_id.clone()),
        None,
    )
    .await
    .unwrap();
    let killed = next(&mut rx, "TASK_KILLED", update(v1::TaskState::TaskKilled)).await;
    s.acknowledge(&killed).await.unwrap();
    // Acknowledged terminal tasks are forgotten: explicit reconciliation says lost.
    s.reconcile(vec![(v1::TaskId { value: "t1".into() }, None)])
        .await
        .unwrap();
    let lost = next(
        &mut rx,
        "reconciliation answer",
        update(v1::TaskState::TaskLost),
    )
    .await;
    assert_eq!(
        lost.reason,
        Some(v1::task_status::Reason::Reconciliation as i32)
    );
    assert_eq!(lost.uuid, None);
    s.teardown().await.unwrap();
    stop.cancel();
}

#[tokio::test]
async fn scheduler_session_on_dev_master_protobuf() {
    session(Encoding::Protobuf).await;
}

#[tokio::test]
async fn scheduler_session_on_dev_master_json() {
    session(Encoding::Json).await;
}

#[tokio::test]
async fn framework_fails_over_with_the_same_id_and_keeps_its_tasks() {
    let (m, stop) = dev_master(1).await;
    let (s1, mut rx1) = connect(m.addr, framework(None), Encoding::Protobuf);
    let fid = next(&mut rx1, "SUBSCRIBED", |e| match e {
        SchedulerEvent::Subscribed { framework_id, .. } => Some(framework_id.clone()),
        _ => None,
    })
    .await;
    let o = next(&mut rx1, "OFFERS", offers).await.remove(0);
    s1.accept(vec![o.id.clone()], vec![command_task("long", &o)], None)
        .await
        .unwrap();
    let running = next(&mut rx1, "TASK_RUNNING", update(v1::TaskState::TaskRunning)).await;
    s1.acknowledge(&running).await.unwrap();
    // The first scheduler dies; a second one takes over the framework id.
    s1.stop();
    drop(rx1);
    let (s2, mut rx2) = connect(m.addr, framework(Some(&fid.value)), Encoding::Json);
    let fid2 = next(&mut rx2, "SUBSCRIBED", |e| match e {
        SchedulerEvent::Subscribed { framework_id, .. } => Some(framework_id.clone()),
        _ => None,
    })
    .await;
    assert_eq!(fid2, fid);
    s2.reconcile(vec![]).await.unwrap();
    let st = next(
        &mut rx2,
        "reconciled TASK_RUNNING",
        update(v1::TaskState::TaskRunning),
    )
    .await;
    assert_eq!(st.task_id.value, "long");
    let state: serde_json::Value = reqwest::get(format!("http://{}/state", m.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["frameworks"][0]["id"], fid.value);
    assert_eq!(state["frameworks"][0]["tasks"][0]["state"], "TASK_RUNNING");
    stop.cancel();
}

async fn post(
    addr: std::net::SocketAddr,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/scheduler"))
        .body(body.to_string());
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn bad_calls_get_mesos_status_codes_and_reasons() {
    scheduler::install_crypto_provider();
    let (m, stop) = dev_master(0).await;
    let a = m.addr;
    let json = Some("application/json");
    assert_eq!(
        post(a, None, &[], "{}").await,
        (400, "Expecting 'Content-Type' to be present".into())
    );
    assert_eq!(
        post(a, Some("application/json; charset=utf-8"), &[], "{}")
            .await
            .0,
        415
    );
    let (code, body) = post(a, json, &[], "{not json").await;
    assert_eq!(code, 400);
    assert!(
        body.starts_with("Failed to convert JSON into Call protobuf"),
        "{body}"
    );
    let (code, body) = post(
        a,
        json,
        &[],
        r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"x"}}}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("subscribe.framework_info.user"), "{body}");
    let sub = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"x"}}}"#;
    let (code, body) = post(a, json, &[("Mesos-Stream-Id", "x")], sub).await;
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            "Subscribe calls should not include the 'Mesos-Stream-Id' header"
        )
    );
    assert_eq!(post(a, json, &[("Accept", "text/html")], sub).await.0, 406);
    let (code, body) = post(
        a,
        json,
        &[],
        r#"{"type":"REVIVE","framework_id":{"value":"nope"}}"#,
    )
    .await;
    assert_eq!((code, body.as_str()), (400, "Framework cannot be found"));
    assert_eq!(post(a, json, &[], r#"{"type":"UNKNOWN"}"#).await.0, 400);
    // Still alive and serving after all of that.
    assert_eq!(
        reqwest::get(format!("http://{a}/health"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    stop.cancel();
}

#[tokio::test]
async fn basic_authentication_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(&creds, "k8s s3cret\n").unwrap();
    let stop = CancellationToken::new();
    let args = master::Args {
        ip: "127.0.0.1".parse().unwrap(),
        port: 0,
        hostname: None,
        allocation_interval: Duration::from_millis(100),
        agent_timeout: Duration::from_secs(5),
        credentials: Some(creds),
        hollow_agents: 1,
        hollow_resources: "cpus:1;mem:512".into(),
        hollow_attributes: String::new(),
        hollow_task_delay: Duration::from_millis(20),
    };
    let m = master::start(args, stop.clone()).await.unwrap();
    let base = format!("http://{}", m.addr);
    let subscribe = |secret: &str| {
        let (tx, rx) = watch::channel(Some(MasterAddress {
            base: base.clone(),
            info: None,
        }));
        tokio::spawn(async move { tx.closed().await });
        let mut cfg = SchedulerConfig::new(framework(None));
        cfg.credentials = Some(scheduler::Credentials {
            principal: "k8s".into(),
            secret: secret.into(),
        });
        scheduler::start(cfg, rx).unwrap()
    };
    let (_bad, mut rx) = subscribe("wrong");
    let failed = next(&mut rx, "Failed", |e| match e {
        SchedulerEvent::Failed { message } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert!(failed.contains("401"), "{failed}");
    let (_good, mut rx) = subscribe("s3cret");
    next(&mut rx, "OFFERS", offers).await;
    stop.cancel();
}
