//! Several nats-servers joined as one cluster.

use std::time::Duration;

use crate::{free_port, scratch_dir, wait_until, NatsServer};

/// Several nats-servers joined as one cluster (full mesh of routes), each with monitoring enabled.
pub struct NatsCluster {
    /// The servers, in start order.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers on loopback, joined as the cluster `agora-test`.
    pub fn start(n: usize) -> Self {
        Self::start_with_args(n, &[])
    }

    /// Starts `n` JetStream-enabled servers joined as one cluster, each with its own store directory (`-js -sd`), so
    /// that replicated streams work and a killed server restarts ([`NatsServer::restart`]) with its data.
    pub fn start_jetstream(n: usize) -> Self {
        let dirs: Vec<String> = (0..n)
            .map(|i| scratch_dir(&format!("js-{i}")).to_string_lossy().into_owned())
            .collect();
        Self::start_each(n, |i| vec!["-js".to_string(), "-sd".to_string(), dirs[i].clone()])
    }

    /// Like [`NatsCluster::start`], with extra arguments for every server.
    pub fn start_with_args(n: usize, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        Self::start_each(n, |_| extra.clone())
    }

    /// Starts `n` servers, server `i` with the extra arguments `extra(i)`.
    fn start_each(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Self {
        // Route ports are still found free beforehand and handed over (a small race, unlike the client and
        // monitoring ports, which each server chooses itself): every server's `--routes` must name the others' route
        // ports before any of them runs. Letting each choose (`--cluster nats://127.0.0.1:-1`) and naming only the
        // servers started before it does not work: a JetStream cluster refuses to start without configured routes
        // ("JetStream cluster requires configured routes"), which the first server would not have.
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let servers = (0..n)
            .map(|i| {
                let cluster = format!("nats://127.0.0.1:{}", cluster_ports[i]);
                let routes = cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let name = format!("agora-test-{i}");
                let mut args = vec![
                    "--cluster",
                    cluster.as_str(),
                    "--cluster_name",
                    "agora-test",
                    "-n",
                    name.as_str(),
                ];
                if !routes.is_empty() {
                    args.extend_from_slice(&["--routes", routes.as_str()]);
                }
                let extra = extra(i);
                args.extend(extra.iter().map(String::as_str));
                NatsServer::start_with_monitoring(&args)
            })
            .collect();
        NatsCluster { servers }
    }

    /// Waits until every running server has a route to every other one; returns whether that happened in time.
    pub fn wait_for_routes(&self, deadline: Duration) -> bool {
        let expected = self.servers.len().saturating_sub(1);
        wait_until(deadline, || {
            self.servers.iter().filter(|s| s.pid().is_some()).all(|s| {
                s.monitor("/routez")["routes"]
                    .as_array()
                    .map(|routes| {
                        // `remote_id` (the peer's server id) is reported by every server version; `remote_name`
                        // only from 2.10 on. Pooled routes (2.10+) repeat a peer, hence the dedup.
                        let mut peers: Vec<&str> = routes.iter().filter_map(|r| r["remote_id"].as_str()).collect();
                        peers.sort_unstable();
                        peers.dedup();
                        peers.len()
                    })
                    .unwrap_or(0)
                    >= expected
            })
        })
    }

    /// The client addresses of all servers (`127.0.0.1:<port>`), for an agora config's `address` list.
    pub fn addresses(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::address).collect()
    }

    /// The server whose client port is `port`, if any.
    pub fn by_port(&mut self, port: u16) -> Option<&mut NatsServer> {
        self.servers.iter_mut().find(|s| s.port() == port)
    }
}
