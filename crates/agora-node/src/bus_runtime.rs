//! The cluster connection's own runtime: the coordinator (the NATS connection, heartbeats, membership, decoding and
//! dispatch) runs on threads of its own, so that work on the API's runtime (thousands of streams to clients that
//! do not read, a burst of requests) cannot delay a heartbeat until peers drop the node, or the reading of the NATS
//! socket until the server drops the connection as a slow consumer. The operating system shares the cores between
//! the two runtimes' threads; neither can queue the other's tasks behind its own.

use std::thread::JoinHandle;
use std::time::Duration;

/// How long the coordinator's remaining tasks get when the node stops (it has left the cluster by then).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The runtime and the thread that owns it (a runtime may not be dropped from async code).
pub struct BusRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<std::sync::mpsc::Sender<()>>,
    owner: Option<JoinHandle<()>>,
}

impl BusRuntime {
    /// Starts the runtime: as many worker threads as the API's runtime (one per core), named `agora-bus`.
    pub fn start() -> std::io::Result<Self> {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("agora-bus")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let owner = std::thread::Builder::new()
            .name("agora-bus-owner".into())
            .spawn(move || {
                let _ = stopped.recv();
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })?;
        Ok(BusRuntime {
            handle,
            stop: Some(stop),
            owner: Some(owner),
        })
    }

    /// Runs `future` on the bus runtime (so that everything it spawns stays there) and waits for its result.
    pub async fn run<F>(&self, future: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future).await
    }
}

impl Drop for BusRuntime {
    fn drop(&mut self) {
        drop(self.stop.take());
        // Joined off the async runtime's threads: dropping may happen in async code, which must not block.
        if let Some(owner) = self.owner.take() {
            std::thread::spawn(move || {
                let _ = owner.join();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn tasks_spawned_on_the_bus_stay_there_while_the_api_runtime_is_busy() {
        let bus = BusRuntime::start().expect("runtime");
        // The API's only worker is blocked: a task queued there would not run.
        let (blocked_tx, blocked_rx) = std::sync::mpsc::channel::<()>();
        let _hog = tokio::spawn(async move {
            let _ = blocked_rx.recv_timeout(Duration::from_secs(5));
        });
        let started = std::time::Instant::now();
        let ticks = bus
            .run(async {
                let ticker = tokio::spawn(async {
                    let mut ticks = 0;
                    let mut interval = tokio::time::interval(Duration::from_millis(10));
                    for _ in 0..10 {
                        interval.tick().await;
                        ticks += 1;
                    }
                    ticks
                });
                ticker.await.unwrap_or(0)
            })
            .await
            .expect("bus task");
        drop(blocked_tx);
        assert_eq!(ticks, 10);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let name = bus
            .run(async { std::thread::current().name().map(str::to_string) })
            .await
            .expect("bus task");
        assert_eq!(name.as_deref(), Some("agora-bus"));
    }
}
