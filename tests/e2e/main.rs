//! The end-to-end suite: the real `km local` binary on real Docker, driven
//! by the machine's kubectl (v1.32), as a user would.
//!
//! Each test starts its own `km local` (fresh data dir, free ports, node name
//! `e2e-<tag>`, `--proxy-mode userspace`, agents with `cpus:8;mem:16384`),
//! one at a time, and leaves nothing behind: no km process, no container of
//! its namespaces. Pods use `km-test/busybox:1`, built by
//! scripts/test-deps.sh (`make test` runs it): there is no registry.
//!
//! * `session`: a user's first session: the node, a pod and its host port,
//!   a Deployment behind a NodePort Service through km proxy, `kubectl logs`
//!   (with and without `-f`), deletion, and a pod that fits nowhere.
//! * `executor_loss`: kill -9 of an agent's executor; the Deployment's pods
//!   are replaced.
//! * `scheduler_crash`: kill -9 of the scheduler in a burst of 200 pods;
//!   every pod runs exactly once (the API, the dev-master's /state and
//!   `docker ps` agree).
//! * `lifecycle`: Ctrl-C stops everything and removes the containers; a
//!   second km local on the same data dir has the same objects.

mod executor_loss;
mod lifecycle;
mod scheduler_crash;
mod session;
mod support;
