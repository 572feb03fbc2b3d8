//! `--spawn`: a throwaway cluster of three `shardgate-node` stand-ins behind one `shardgate`
//! gateway, all on loopback, torn down with SIGTERM when the run ends.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const STORAGE_NODES: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running cluster. Dropping it stops every process and removes its data directory.
pub struct Cluster {
    /// Gateway base URL, `http://127.0.0.1:<port>`.
    pub gateway_url: String,
    pub gateway_pid: u32,
    pub node_pids: Vec<u32>,
    /// HTTP base URLs of the stand-ins.
    pub node_urls: Vec<String>,
    /// Data directories and process logs.
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
    keep_dir: bool,
}

/// Ports the OS says are free right now. They are released before the processes bind them, so
/// another program could take one in between; on loopback in a test run that is rare enough.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<_>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Where `shardgate` and `shardgate-node` are: next to this executable, as cargo builds them.
pub fn default_bin_dir() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "executable has no directory"))
}

impl Cluster {
    /// Start three storage-node stand-ins and a gateway in front of them, and wait until the
    /// gateway answers `/health` and reports every storage node reachable.
    pub fn start(bin_dir: &Path, keep_dir: bool) -> io::Result<Cluster> {
        let node_bin = bin_dir.join("shardgate-node");
        let gateway_bin = bin_dir.join("shardgate");
        for b in [&node_bin, &gateway_bin] {
            if !b.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} not found; build it with `cargo build --release -p shardgate --bins` \
                         or point --bin-dir at it",
                        b.display()
                    ),
                ));
            }
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("shardgate-load-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Cluster {
            gateway_url: String::new(),
            gateway_pid: 0,
            node_pids: Vec::new(),
            node_urls: Vec::new(),
            dir: dir.clone(),
            children: Vec::new(),
            keep_dir,
        };
        let ports = free_ports(2 * STORAGE_NODES + 1)?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let mut storage_nodes = Vec::new();
        for i in 0..STORAGE_NODES {
            let (vminsert, http) = (ports[2 * i], ports[2 * i + 1]);
            let data = dir.join(format!("node-{i}"));
            std::fs::create_dir_all(&data)?;
            let child = cluster.launch(
                &format!("node-{i}"),
                &node_bin,
                &[
                    format!("-vminsertAddr=127.0.0.1:{vminsert}"),
                    format!("-httpListenAddr=127.0.0.1:{http}"),
                    format!("-storageDataPath={}", data.display()),
                ],
            )?;
            cluster.node_pids.push(child);
            storage_nodes.push(format!("127.0.0.1:{vminsert}"));
            let url = format!("http://127.0.0.1:{http}");
            cluster.wait_healthy(&agent, &url)?;
            cluster.node_urls.push(url);
        }
        let port = ports[2 * STORAGE_NODES];
        cluster.gateway_pid = cluster.launch(
            "gateway",
            &gateway_bin,
            &[
                format!("-storageNode={}", storage_nodes.join(",")),
                format!("-httpListenAddr=127.0.0.1:{port}"),
            ],
        )?;
        cluster.gateway_url = format!("http://127.0.0.1:{port}");
        let url = cluster.gateway_url.clone();
        cluster.wait_healthy(&agent, &url)?;
        cluster.wait_nodes_reachable(&agent)?;
        Ok(cluster)
    }

    fn launch(&mut self, name: &str, bin: &Path, args: &[String]) -> io::Result<u32> {
        let log = File::create(self.dir.join(format!("{name}.log")))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start {}: {e}", bin.display()))
            })?;
        let pid = child.id();
        self.children.push((name.to_string(), child));
        Ok(pid)
    }

    /// Fails early, with the process log, if one of ours exited.
    fn check_alive(&mut self) -> io::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                return Err(io::Error::other(format!(
                    "{name} exited with {status} during startup; its log:\n{}",
                    log.trim_end()
                )));
            }
        }
        Ok(())
    }

    fn wait_healthy(&mut self, agent: &ureq::Agent, base: &str) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok(r) = agent.get(&format!("{base}/health")).call() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{base}/health did not answer 200 within {START_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A load that starts before the gateway's storage connections are up would measure
    /// rerouting and buffering instead of the steady state.
    fn wait_nodes_reachable(&mut self, agent: &ureq::Agent) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/metrics", self.gateway_url);
        loop {
            self.check_alive()?;
            let reachable = agent
                .get(&url)
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .map_or(0, |text| count_reachable(&text));
            if reachable >= STORAGE_NODES {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the gateway saw {reachable} of {STORAGE_NODES} storage nodes reachable \
                         after {START_TIMEOUT:?}"
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time of the storage-node stand-ins together.
    pub fn nodes_cpu(&self) -> io::Result<Duration> {
        self.node_pids
            .iter()
            .map(|&p| crate::cpu::process_cpu(p))
            .sum()
    }

    /// Rows the stand-ins hold together (`vm_standin_rows_stored`), to check that what the
    /// gateway accepted really arrived. `None` if a stand-in does not answer.
    pub fn rows_stored(&self) -> Option<u64> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        let mut total = 0;
        for base in &self.node_urls {
            let text = agent
                .get(&format!("{base}/metrics"))
                .call()
                .ok()?
                .into_string()
                .ok()?;
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("vm_standin_rows_stored "))?
                .trim()
                .parse::<u64>()
                .ok()?;
        }
        Some(total)
    }

    /// SIGTERM every process, gateway first so it can flush to the still-running nodes; SIGKILL
    /// whatever has not exited after a grace period.
    pub fn stop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            if let Ok(None) = child.try_wait() {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                let deadline = Instant::now() + STOP_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Storage nodes the gateway reports reachable (metric rows connection).
fn count_reachable(metrics_text: &str) -> usize {
    metrics_text
        .lines()
        .filter(|l| l.starts_with("vm_rpc_vmstorage_is_reachable{"))
        .filter(|l| !l.contains("rpc_call=") || l.contains("rpc_call=\"metric_rows\""))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachable_count_reads_the_gauge_per_node() {
        let text = "\
vm_rpc_vmstorage_is_reachable{name=\"vminsert\",addr=\"a:1\",rpc_call=\"metric_rows\"} 1\n\
vm_rpc_vmstorage_is_reachable{name=\"vminsert\",addr=\"b:1\",rpc_call=\"metric_rows\"} 0\n\
vm_rpc_vmstorage_is_reachable{name=\"vminsert\",addr=\"c:1\",rpc_call=\"metric_rows\"} 1\n\
vm_rpc_rows_sent_total{name=\"vminsert\",addr=\"a:1\",rpc_call=\"metric_rows\"} 1\n";
        assert_eq!(count_reachable(text), 2);
    }

    #[test]
    fn missing_binaries_are_reported_with_a_hint() {
        let empty =
            std::env::temp_dir().join(format!("shardgate-load-nobin-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let err = Cluster::start(&empty, false).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("shardgate-node"), "{err}");
        let _ = std::fs::remove_dir_all(&empty);
    }
}
