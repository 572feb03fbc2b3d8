//! `shardgate-load`: see `--help` and load/README.md.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shardgate_load::bodies::{Format, Workload};
use shardgate_load::run::{self, LoadConfig, Report};
use shardgate_load::{cpu, sink, spawn};

const USAGE: &str = "\
shardgate-load pushes N samples into a vminsert-compatible gateway over K keep-alive connections
and reports samples per second and the gateway's CPU-seconds per million samples.

Usage: shardgate-load [options]

  --url URL            gateway base URL (default http://127.0.0.1:8480)
  --format F           prometheus | remote-write | influx | jsonl | csv (default prometheus)
  --samples N          total samples to send (default 2000000)
  --series S           distinct series (default 20000)
  --batch B            samples per request (default 10000)
  --connections K      parallel keep-alive connections (default 4)
  --tenant T           tenant in the path /insert/T/... (default 0)
  --pid P              gateway process whose CPU time to measure
  --pid-from-port      find the gateway process by the port of --url
  --step-ms MS         time between two samples of one series (default 1000)
  --timeout SECS       per-request timeout (default 60)
  --drain-timeout SECS wait this long for the gateway to send buffered rows (default 30)
  --json               print a JSON object instead of the human-readable line
  --spawn              start 3 shardgate-node stand-ins and a shardgate gateway, load them,
                       report, and stop them
  --bin-dir DIR        where shardgate and shardgate-node are (default: next to this binary)
  --keep-data          with --spawn, keep the data directory and process logs
  --self-test          run against a built-in HTTP sink that answers 204 (tests the tool itself)
  -h, --help           this text

Exit status: 0 if every request got a 2xx answer, 1 if any failed, 2 on a usage or setup error.";

struct Args {
    url: String,
    format: Format,
    samples: u64,
    series: u64,
    batch: u64,
    connections: usize,
    tenant: String,
    pid: Option<u32>,
    pid_from_port: bool,
    step_ms: i64,
    timeout: Duration,
    drain_timeout: Duration,
    json: bool,
    spawn: bool,
    bin_dir: Option<std::path::PathBuf>,
    keep_data: bool,
    self_test: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8480".into(),
        format: Format::Prometheus,
        samples: 2_000_000,
        series: 20_000,
        batch: 10_000,
        connections: 4,
        tenant: "0".into(),
        pid: None,
        pid_from_port: false,
        step_ms: 1000,
        timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(30),
        json: false,
        spawn: false,
        bin_dir: None,
        keep_data: false,
        self_test: false,
    };
    fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
        v.parse()
            .map_err(|_| format!("{flag}: cannot parse {v:?} as a number"))
    }
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" | "-help" => return Ok(None),
            "--url" => a.url = value()?,
            "--format" => a.format = value()?.parse()?,
            "--samples" => a.samples = num(&flag, &value()?)?,
            "--series" => a.series = num(&flag, &value()?)?,
            "--batch" => a.batch = num(&flag, &value()?)?,
            "--connections" => a.connections = num(&flag, &value()?)?,
            "--tenant" => a.tenant = value()?,
            "--pid" => a.pid = Some(num(&flag, &value()?)?),
            "--step-ms" => a.step_ms = num(&flag, &value()?)?,
            "--timeout" => a.timeout = Duration::from_secs_f64(num(&flag, &value()?)?),
            "--drain-timeout" => a.drain_timeout = Duration::from_secs_f64(num(&flag, &value()?)?),
            "--bin-dir" => a.bin_dir = Some(value()?.into()),
            "--pid-from-port" => a.pid_from_port = true,
            "--json" => a.json = true,
            "--spawn" => a.spawn = true,
            "--keep-data" => a.keep_data = true,
            "--self-test" => a.self_test = true,
            _ => return Err(format!("unknown argument {arg:?}; see --help")),
        }
    }
    if a.samples == 0 || a.series == 0 || a.batch == 0 || a.connections == 0 {
        return Err("--samples, --series, --batch and --connections must be positive".into());
    }
    if a.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    if [a.spawn, a.self_test, a.pid_from_port || a.pid.is_some()]
        .iter()
        .filter(|&&x| x)
        .count()
        > 1
    {
        return Err("--spawn, --self-test and --pid/--pid-from-port exclude each other".into());
    }
    Ok(Some(a))
}

/// Port of a `http://host:port/...` URL (80 when absent).
fn url_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((_, p)) if !p.ends_with(']') => p.parse().ok(),
        _ => Some(80),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("shardgate-load: {e}");
            return ExitCode::from(2);
        }
    };
    match real_main(args) {
        Ok(report) => {
            let lost = report.rows_stored.is_some_and(|n| n != report.samples);
            if lost {
                eprintln!(
                    "shardgate-load: the gateway accepted {} samples but the storage nodes hold {:?}",
                    report.samples, report.rows_stored
                );
            }
            if report.failed_requests > 0 || lost {
                for e in &report.errors {
                    eprintln!("shardgate-load: failed {e}");
                }
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("shardgate-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: Args) -> Result<Report, String> {
    let mut workload = Workload {
        samples: args.samples,
        series: args.series,
        batch: args.batch,
        start_ms: 0,
        step_ms: args.step_ms,
    };
    // The last round lands at about now, so a real storage node's retention and "too far in
    // the future" checks accept every sample.
    let span = (workload.rounds() as i64).saturating_mul(args.step_ms);
    workload.start_ms = now_ms().saturating_sub(span);
    let mut cfg = LoadConfig {
        base_url: args.url.clone(),
        format: args.format,
        workload,
        tenant: args.tenant.clone(),
        connections: args.connections,
        request_timeout: args.timeout,
        gateway_pid: args.pid,
        drain_timeout: args.drain_timeout,
    };
    let report = if args.spawn {
        let bin_dir = match &args.bin_dir {
            Some(d) => d.clone(),
            None => spawn::default_bin_dir().map_err(|e| e.to_string())?,
        };
        let cluster = spawn::Cluster::start(&bin_dir, args.keep_data)
            .map_err(|e| format!("cannot start the cluster: {e}"))?;
        if args.keep_data {
            eprintln!("shardgate-load: data and logs in {}", cluster.dir.display());
        }
        cfg.base_url = cluster.gateway_url.clone();
        cfg.gateway_pid = Some(cluster.gateway_pid);
        let nodes_before = cluster.nodes_cpu().ok();
        let mut r = run::run(&cfg)?;
        r.storage_nodes_cpu_seconds = match (nodes_before, cluster.nodes_cpu().ok()) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64()),
            _ => None,
        };
        r.rows_stored = cluster.rows_stored();
        drop(cluster);
        r
    } else if args.self_test {
        let sink = sink::Sink::start(Arc::new(|_| 204)).map_err(|e| e.to_string())?;
        cfg.base_url = sink.url();
        // The sink runs in this process, so "gateway CPU" here is the sink plus the client.
        cfg.gateway_pid = Some(std::process::id());
        let r = run::run(&cfg)?;
        let got = sink
            .stats
            .inserts
            .load(std::sync::atomic::Ordering::Relaxed);
        if got != r.requests {
            return Err(format!(
                "self-test: sent {} requests, the sink saw {got}",
                r.requests
            ));
        }
        r
    } else {
        if args.pid_from_port {
            let port = url_port(&args.url)
                .ok_or_else(|| format!("cannot find a port in --url {:?}", args.url))?;
            cfg.gateway_pid = Some(cpu::pid_listening_on(port).map_err(|e| e.to_string())?);
        }
        run::run(&cfg)?
    };
    if args.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.human());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_take_values_separately_or_inline() {
        let a = parse(&[
            "--format=remote-write",
            "--samples",
            "500",
            "--connections=2",
            "--json",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.format, Format::RemoteWrite);
        assert_eq!((a.samples, a.connections, a.batch), (500, 2, 10_000));
        assert!(a.json);
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["--samples", "x"]).is_err());
        assert!(parse(&["--samples"]).is_err());
        assert!(parse(&["--batch", "0"]).is_err());
        assert!(parse(&["--format", "graphite"]).is_err());
        assert!(parse(&["--spawn", "--pid", "1"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn ports_come_from_the_url() {
        assert_eq!(url_port("http://127.0.0.1:8480"), Some(8480));
        assert_eq!(url_port("http://localhost:9/x/y"), Some(9));
        assert_eq!(url_port("http://localhost/"), Some(80));
        assert_eq!(url_port("ftp://x:1"), None);
    }
}
