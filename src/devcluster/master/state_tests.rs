//! The master's rules, driven directly: a framework's view is the events on
//! its connection's channel.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::*;
use crate::mesos::proto::v1::scheduler::call;
use crate::resources::text::parse_resources;

fn master() -> Master {
    let info = v1::MasterInfo {
        id: "M".into(),
        ip: 0,
        port: 5050,
        ..Default::default()
    };
    Master::new(info, Duration::from_secs(30))
}

fn conn(stream: &str) -> (Conn, UnboundedReceiver<Bytes>) {
    let (tx, rx) = unbounded_channel();
    (
        Conn {
            tx,
            encoding: Encoding::Protobuf,
            stream_id: stream.into(),
        },
        rx,
    )
}

fn drain(rx: &mut UnboundedReceiver<Bytes>) -> Vec<Event> {
    drain_as(rx)
}

fn drain_as<M: prost::Message + prost::Name + Default>(
    rx: &mut UnboundedReceiver<Bytes>,
) -> Vec<M> {
    let mut out = Vec::new();
    while let Ok(b) = rx.try_recv() {
        let mut buf = bytes::BytesMut::from(&b[..]);
        let rec = tokio_util::codec::Decoder::decode(
            &mut crate::mesos::recordio::RecordIo::default(),
            &mut buf,
        )
        .unwrap()
        .unwrap();
        out.push(Encoding::Protobuf.decode::<M>(&rec).unwrap());
    }
    out
}

fn types(events: &[Event]) -> Vec<event::Type> {
    events
        .iter()
        .map(|e| event::Type::try_from(e.r#type.unwrap()).unwrap())
        .collect()
}

/// A connected real agent ("real", cpus:2;mem:512) on the connection
/// "agent-conn": its id and its event channel.
fn real_agent(m: &mut Master) -> (String, UnboundedReceiver<Bytes>) {
    let (ac, arx) = conn("agent-conn");
    let info = v1::AgentInfo {
        hostname: "real".into(),
        resources: parse_resources("cpus:2;mem:512").unwrap(),
        ..Default::default()
    };
    (
        m.register_agent(info, vec![], Some(ac), AgentKind::Real),
        arx,
    )
}

fn framework(name: &str, caps: &[i32]) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        user: "root".into(),
        name: name.into(),
        failover_timeout: Some(60.0),
        capabilities: caps
            .iter()
            .map(|c| v1::framework_info::Capability { r#type: Some(*c) })
            .collect(),
        ..Default::default()
    }
}

fn hollow(m: &mut Master, host: &str, res: &str) -> String {
    let info = v1::AgentInfo {
        hostname: host.into(),
        resources: parse_resources(res).unwrap(),
        ..Default::default()
    };
    m.register_agent(
        info,
        vec![],
        None,
        AgentKind::Hollow {
            delay: Duration::from_millis(1),
        },
    )
}

fn offers(events: &[Event]) -> Vec<v1::Offer> {
    events
        .iter()
        .filter_map(|e| e.offers.as_ref())
        .flat_map(|o| o.offers.clone())
        .collect()
}

fn updates(events: &[Event]) -> Vec<v1::TaskStatus> {
    events
        .iter()
        .filter_map(|e| e.update.as_ref())
        .map(|u| u.status.clone())
        .collect()
}

/// Subscribes `fw` on a new connection and returns its id, its event
/// channel, the first offer of one allocation, and the allocation time.
fn offered(
    m: &mut Master,
    stream: &str,
    fw: v1::FrameworkInfo,
) -> (String, UnboundedReceiver<Bytes>, v1::Offer, Instant) {
    let (c, mut rx) = conn(stream);
    let fid = m.subscribe(None, fw, c).unwrap();
    let now = Instant::now();
    m.allocate(now);
    let o = offers(&drain(&mut rx)).remove(0);
    (fid, rx, o, now)
}

fn task(id: &str, agent: &str, res: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: v1::TaskId { value: id.into() },
        agent_id: v1::AgentId {
            value: agent.into(),
        },
        resources: parse_resources(res).unwrap(),
        command: Some(v1::CommandInfo {
            value: Some("true".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn launch(offer: &v1::Offer, tasks: Vec<v1::TaskInfo>) -> call::Accept {
    call::Accept {
        offer_ids: vec![offer.id.clone()],
        operations: vec![v1::offer::Operation {
            r#type: Some(v1::offer::operation::Type::Launch as i32),
            launch: Some(v1::offer::operation::Launch { task_infos: tasks }),
            ..Default::default()
        }],
        filters: None,
    }
}

#[test]
fn subscribe_sends_subscribed_then_heartbeat_then_offers() {
    let mut m = master();
    let agent = hollow(&mut m, "a", "cpus:4;mem:1024");
    let (c, mut rx) = conn("s1");
    let fid = m.subscribe(None, framework("f", &[]), c).unwrap();
    assert_eq!(fid, "M-0000");
    assert_eq!(m.allocate(Instant::now()), 1);
    let ev = drain(&mut rx);
    assert_eq!(
        types(&ev),
        [
            event::Type::Subscribed,
            event::Type::Heartbeat,
            event::Type::Offers
        ]
    );
    let o = &offers(&ev)[0];
    assert_eq!(o.agent_id.value, agent);
    assert_eq!(o.id.value, "M-O0");
    // Offered resources are not offered twice.
    assert_eq!(m.allocate(Instant::now()), 0);
}

#[test]
fn decline_filters_then_revive_clears() {
    let mut m = master();
    hollow(&mut m, "a", "cpus:4;mem:1024");
    let (fid, mut rx, o, now) = offered(&mut m, "s1", framework("f", &[]));
    m.decline(
        &fid,
        std::slice::from_ref(&o.id),
        Some(&v1::Filters {
            refuse_seconds: Some(10.0),
        }),
        now,
    );
    assert_eq!(m.allocate(now), 0, "filtered for 10 s");
    assert_eq!(
        m.allocate(now + Duration::from_secs(11)),
        1,
        "filter expired"
    );
    let o = offers(&drain(&mut rx)).remove(0);
    m.decline(&fid, &[o.id], None, now);
    m.revive(&fid, &[]);
    assert_eq!(m.allocate(now), 1, "revive clears filters");
}

#[test]
fn suppress_stops_offers() {
    let mut m = master();
    hollow(&mut m, "a", "cpus:4;mem:1024");
    let (c, _rx) = conn("s1");
    let fid = m.subscribe(None, framework("f", &[]), c).unwrap();
    m.suppress(&fid, &[]);
    assert_eq!(m.allocate(Instant::now()), 0);
    m.revive(&fid, &[]);
    assert_eq!(m.allocate(Instant::now()), 1);
}

#[test]
fn accept_launches_and_leftovers_are_offered_later() {
    let mut m = master();
    let agent = hollow(&mut m, "a", "cpus:4;mem:1024");
    let (fid, mut rx, o, now) = offered(&mut m, "s1", framework("f", &[]));
    m.accept(
        &fid,
        launch(&o, vec![task("t1", &agent, "cpus:1;mem:128")]),
        now,
    );
    assert_eq!(m.tasks.len(), 1);
    assert!(matches!(m.timers[0].1, Timer::HollowRunning { .. }));
    // Leftovers are filtered for the default 5 s.
    assert_eq!(m.allocate(now), 0);
    m.allocate(now + Duration::from_secs(6));
    let o2 = offers(&drain(&mut rx)).remove(0);
    let res: Resources = o2.resources.iter().cloned().collect();
    assert_eq!((res.scalar("cpus"), res.scalar("mem")), (3.0, 896.0));
    // The hollow task runs; its update carries a uuid to acknowledge.
    m.fire(m.timers[0].1.clone());
    let u = updates(&drain(&mut rx)).remove(0);
    assert_eq!(u.state, TaskState::TaskRunning as i32);
    assert_eq!(u.uuid.as_ref().map(Vec::len), Some(16));
    assert_eq!(u.agent_id.as_ref().unwrap().value, agent);
}

#[test]
fn invalid_tasks_get_task_error_and_bad_offers_task_lost() {
    let mut m = master();
    let agent = hollow(&mut m, "a", "cpus:1;mem:1024");
    let (fid, mut rx, o, now) = offered(&mut m, "s1", framework("f", &[]));
    let too_big = task("big", &agent, "cpus:2;mem:128");
    let mut both = task("both", &agent, "cpus:0.1;mem:32");
    both.executor = Some(v1::ExecutorInfo {
        executor_id: v1::ExecutorId { value: "e".into() },
        ..Default::default()
    });
    m.accept(&fid, launch(&o, vec![too_big, both]), now);
    let us = updates(&drain(&mut rx));
    assert_eq!(us.len(), 2);
    for u in &us {
        assert_eq!(u.state, TaskState::TaskError as i32);
        assert_eq!(u.reason, Some(Reason::TaskInvalid as i32));
        assert_eq!(u.uuid, None, "master updates carry no uuid");
    }
    assert!(
        us[0]
            .message
            .as_ref()
            .unwrap()
            .contains("more than available"),
        "{:?}",
        us[0].message
    );
    // The offer is gone now: accepting it again loses the task.
    m.accept(&fid, launch(&o, vec![task("t", &agent, "cpus:0.1")]), now);
    let u = updates(&drain(&mut rx)).remove(0);
    assert_eq!(u.state, TaskState::TaskLost as i32);
    assert_eq!(u.reason, Some(Reason::InvalidOffers as i32));
}

#[test]
fn reconciliation_answers_like_mesos() {
    let mut m = master();
    let agent = hollow(&mut m, "a", "cpus:4;mem:1024");
    let (c, mut rx) = conn("s1");
    let fid = m
        .subscribe(None, framework("f", &[CAP_PARTITION_AWARE]), c)
        .unwrap();
    let now = Instant::now();
    m.allocate(now);
    let o = offers(&drain(&mut rx)).remove(0);
    m.accept(&fid, launch(&o, vec![task("t1", &agent, "cpus:1")]), now);
    m.reconcile(&fid, &[]);
    let u = updates(&drain(&mut rx));
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state, TaskState::TaskStaging as i32);
    assert_eq!(u[0].reason, Some(Reason::Reconciliation as i32));
    m.reconcile(
        &fid,
        &[
            (
                v1::TaskId {
                    value: "gone".into(),
                },
                Some(v1::AgentId {
                    value: agent.clone(),
                }),
            ),
            (
                v1::TaskId {
                    value: "nowhere".into(),
                },
                None,
            ),
        ],
    );
    let u = updates(&drain(&mut rx));
    assert_eq!(u[0].state, TaskState::TaskGone as i32);
    assert_eq!(u[1].state, TaskState::TaskUnknown as i32);
}

#[test]
fn acknowledging_a_terminal_update_forgets_the_task() {
    let mut m = master();
    let agent = hollow(&mut m, "a", "cpus:4;mem:1024");
    let (fid, mut rx, o, now) = offered(&mut m, "s1", framework("f", &[]));
    m.accept(&fid, launch(&o, vec![task("t1", &agent, "cpus:1")]), now);
    m.kill(
        &fid,
        &call::Kill {
            task_id: v1::TaskId { value: "t1".into() },
            agent_id: None,
            kill_policy: None,
        },
    );
    let u = updates(&drain(&mut rx)).remove(0);
    assert_eq!(u.state, TaskState::TaskKilled as i32);
    let bad = call::Acknowledge {
        agent_id: v1::AgentId {
            value: agent.clone(),
        },
        task_id: u.task_id.clone(),
        uuid: vec![1, 2],
    };
    assert_eq!(m.acknowledge(&fid, &bad).unwrap_err().status, 400);
    let ack = call::Acknowledge {
        agent_id: v1::AgentId { value: agent },
        task_id: u.task_id.clone(),
        uuid: u.uuid.unwrap(),
    };
    m.acknowledge(&fid, &ack).unwrap();
    assert!(m.tasks.is_empty());
    m.reconcile(&fid, &[(u.task_id, None)]);
    assert_eq!(
        updates(&drain(&mut rx))[0].state,
        TaskState::TaskLost as i32
    );
}

#[test]
fn failover_keeps_the_framework_and_its_tasks() {
    let mut m = master();
    let agent = hollow(&mut m, "a", "cpus:4;mem:1024");
    let (fid, mut rx1, o, now) = offered(&mut m, "s1", framework("f", &[]));
    m.accept(&fid, launch(&o, vec![task("t1", &agent, "cpus:1")]), now);
    // A second SUBSCRIBE with the id: the old stream is told, the task stays.
    let (c2, mut rx2) = conn("s2");
    assert_eq!(
        m.subscribe(Some(&fid), framework("f", &[]), c2),
        Some(fid.clone())
    );
    let old = drain(&mut rx1);
    assert_eq!(
        old.last().unwrap().error.as_ref().unwrap().message,
        "Framework failed over"
    );
    assert_eq!(types(&drain(&mut rx2))[0], event::Type::Subscribed);
    assert!(m.tasks.contains_key(&(fid.clone(), "t1".into())));
    assert_eq!(
        m.check_call(Some(&fid), Some("s1")).unwrap_err().status,
        400
    );
    m.check_call(Some(&fid), Some("s2")).unwrap();
    // Disconnected past the failover timeout: removed; resubscribing is an error.
    m.framework_disconnected(&fid, "s2", now);
    assert_eq!(
        m.check_call(Some(&fid), Some("s2")).unwrap_err().status,
        403
    );
    m.expire(now + Duration::from_secs(61));
    assert!(m.tasks.is_empty());
    let (c3, mut rx3) = conn("s3");
    assert_eq!(m.subscribe(Some(&fid), framework("f", &[]), c3), None);
    assert_eq!(
        drain(&mut rx3)[0].error.as_ref().unwrap().message,
        "Framework has been removed"
    );
}

#[test]
fn agent_removal_loses_tasks_and_tells_frameworks() {
    let mut m = master();
    let (agent, _arx) = real_agent(&mut m);
    let (c, mut rx) = conn("s1");
    let mut fw = framework("f", &[CAP_PARTITION_AWARE]);
    fw.checkpoint = Some(true);
    let fid = m.subscribe(None, fw, c).unwrap();
    let now = Instant::now();
    m.allocate(now);
    let o = offers(&drain(&mut rx)).remove(0);
    m.accept(&fid, launch(&o, vec![task("t1", &agent, "cpus:1")]), now);
    m.agent_disconnected(&agent, "agent-conn", now);
    assert!(
        updates(&drain(&mut rx)).is_empty(),
        "checkpointed tasks wait for the agent"
    );
    m.expire(now + Duration::from_secs(31));
    let ev = drain(&mut rx);
    let u = updates(&ev);
    assert_eq!(u[0].state, TaskState::TaskUnreachable as i32);
    assert_eq!(u[0].reason, Some(Reason::AgentRemoved as i32));
    assert!(types(&ev).contains(&event::Type::Failure));
    assert!(m.agents.is_empty());
}

#[test]
fn the_agent_latest_state_shows_and_a_failover_asks_for_pending_updates() {
    let mut m = master();
    let (agent, mut arx) = real_agent(&mut m);
    let (c, mut rx) = conn("s1");
    let fid = m.subscribe(None, framework("f", &[]), c).unwrap();
    let now = Instant::now();
    m.allocate(now);
    let o = offers(&drain(&mut rx)).remove(0);
    m.accept(&fid, launch(&o, vec![task("t1", &agent, "cpus:1")]), now);
    let key = (fid.clone(), "t1".to_string());
    let status = |state: TaskState| v1::TaskStatus {
        task_id: v1::TaskId { value: "t1".into() },
        state: state as i32,
        uuid: Some(vec![1; 16]),
        ..Default::default()
    };

    // STARTING in flight, RUNNING queued behind it at the agent.
    m.status_update(
        &fid,
        &agent,
        status(TaskState::TaskStarting),
        Some(TaskState::TaskRunning as i32),
    );
    assert_eq!(
        updates(&drain(&mut rx))[0].state,
        TaskState::TaskStarting as i32
    );
    assert_eq!(m.tasks[&key].state(), TaskState::TaskRunning);

    // A failover: the agent is asked to resend what it holds.
    drain_as::<AgentEvent>(&mut arx);
    let (c2, _rx2) = conn("s2");
    m.subscribe(Some(&fid), framework("f", &[]), c2).unwrap();
    let asked: Vec<_> = drain_as::<AgentEvent>(&mut arx)
        .into_iter()
        .filter_map(|e| e.update_framework)
        .map(|u| u.framework_id.value)
        .collect();
    assert_eq!(asked, vec![fid.clone()]);

    // A terminal latest state frees the task's resources before the
    // framework hears of it.
    m.status_update(
        &fid,
        &agent,
        status(TaskState::TaskRunning),
        Some(TaskState::TaskFinished as i32),
    );
    assert_eq!(m.tasks[&key].state(), TaskState::TaskFinished);
    assert_eq!(
        m.available_by_agent()[&agent].scalar("cpus"),
        2.0,
        "a finished task holds no cpus"
    );
    // Without a latest state, the update's own state is the task's.
    m.status_update(&fid, &agent, status(TaskState::TaskRunning), None);
    assert_eq!(m.tasks[&key].state(), TaskState::TaskRunning);
}

#[test]
fn multi_role_offers_carry_allocation_info_and_reserved_resources_go_to_their_role() {
    let mut m = master();
    hollow(&mut m, "a", "cpus:2;cpus(k8s):1;mem:1024");
    let (c, mut rx) = conn("s1");
    let mut fw = framework("f", &[CAP_MULTI_ROLE]);
    fw.roles = vec!["k8s".into()];
    m.subscribe(None, fw, c).unwrap();
    m.allocate(Instant::now());
    let o = offers(&drain(&mut rx)).remove(0);
    assert_eq!(
        o.allocation_info.as_ref().unwrap().role.as_deref(),
        Some("k8s")
    );
    let res: Resources = o.resources.iter().cloned().collect();
    assert_eq!(res.scalar("cpus"), 3.0);
    assert!(o.resources.iter().all(|r| r.allocation_info.is_some()));
    let (c2, mut rx2) = conn("s2");
    m.subscribe(None, framework("other", &[]), c2).unwrap();
    m.allocate(Instant::now());
    assert!(
        offers(&drain(&mut rx2)).is_empty(),
        "nothing left for role *"
    );
}

#[test]
fn a_new_executor_shared_by_tasks_of_one_launch_is_charged_once() {
    let mut m = master();
    let agent = hollow(&mut m, "a", "cpus:1;mem:1024");
    let (fid, mut rx, o, now) = offered(&mut m, "s1", framework("f", &[]));
    let exec = v1::ExecutorInfo {
        executor_id: v1::ExecutorId { value: "e".into() },
        command: Some(v1::CommandInfo {
            value: Some("run".into()),
            ..Default::default()
        }),
        resources: parse_resources("cpus:0.4;mem:32").unwrap(),
        ..Default::default()
    };
    let with_exec = |id: &str, e: &v1::ExecutorInfo| v1::TaskInfo {
        command: None,
        executor: Some(e.clone()),
        ..task(id, &agent, "cpus:0.25")
    };
    let mut other = exec.clone();
    other.command = Some(v1::CommandInfo {
        value: Some("different".into()),
        ..Default::default()
    });
    // 0.4 + 0.25 + 0.25 = 0.9 cpus fits in 1.0 only if the executor is charged once.
    m.accept(
        &fid,
        launch(
            &o,
            vec![
                with_exec("t1", &exec),
                with_exec("t2", &exec),
                with_exec("t3", &other),
            ],
        ),
        now,
    );
    let us = updates(&drain(&mut rx));
    assert_eq!(us.len(), 1, "{us:?}");
    assert_eq!(us[0].task_id.value, "t3");
    assert!(
        us[0].message.as_ref().unwrap().contains("not compatible"),
        "{:?}",
        us[0].message
    );
    assert_eq!(m.tasks.len(), 2);
}
