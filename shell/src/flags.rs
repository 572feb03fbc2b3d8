//! Command-line flags spelled the way vminsert spells them (Go `flag` syntax plus VictoriaMetrics'
//! `envflag`, array, size and duration conventions; spec: flags-and-endpoints.md §1–§2).
//!
//! Each binary declares a static table of [`FlagDef`]s; [`parse`] turns arguments and the
//! environment into [`Flags`], whose typed getters are looked up by flag name. A name that is
//! not in the table is a programming error, so the getters panic on it (unit tests read every
//! name the binaries use).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// How a flag's value is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    Int,
    Float,
    /// Go duration syntax (`3s`, `1m30s`).
    Duration,
    /// A byte count with optional `KB`/`MB`/`GB`/`TB`/`KiB`/`MiB`/`GiB`/`TiB` suffix.
    Bytes,
    /// Comma-separated and/or repeated strings.
    Array,
    /// Comma-separated and/or repeated booleans (position-matched to another array).
    BoolArray,
}

/// One flag of a binary.
#[derive(Clone, Copy, Debug)]
pub struct FlagDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Default as text, parsed with the flag's own parser. `""` for arrays means "empty".
    pub default: &'static str,
    pub help: &'static str,
}

const fn f(name: &'static str, kind: Kind, default: &'static str, help: &'static str) -> FlagDef {
    FlagDef {
        name,
        kind,
        default,
        help,
    }
}

use Kind::*;

/// The gateway's flags: everything vminsert's `-help` lists that matters for ingestion, plus
/// the storage-library flags vminsert accepts (accepted and ignored, for drop-in command lines),
/// plus shardgate's own (marked "shardgate:").
pub static GATEWAY_FLAGS: &[FlagDef] = &[
    // Cluster connectivity.
    f("storageNode", Array, "", "Comma-separated addresses of vmstorage nodes; usage: -storageNode=vmstorage-host1,...,vmstorage-hostN. Default port 8400 is used when missing. shardgate: when empty, two embedded stand-in storage nodes are started under -storageDataPath"),
    f("storageNode.placement", Str, "rendezvous", "shardgate: how series are spread over -storageNode: rendezvous (vminsert v1.73+) or jump (vminsert v1.72 and older; keep series on the same nodes as old vminserts)"),
    f("storageDataPath", Str, "./shardgate-data", "shardgate: directory of the embedded stand-in storage nodes used when -storageNode is empty"),
    f("replicationFactor", Int, "1", "Replication factor for the ingested data, i.e. how many copies to make among distinct -storageNode instances"),
    f("disableRerouting", Bool, "false", "Whether to disable re-routing when some of vmstorage nodes accept incoming data at slower speed compared to other storage nodes"),
    f("disableReroutingOnUnavailable", Bool, "false", "Whether to disable re-routing when some of vmstorage nodes are unavailable. Disabled re-routing stops ingestion when some storage nodes are unavailable"),
    f("dropSamplesOnOverload", Bool, "false", "Whether to drop incoming samples if the destination vmstorage node is overloaded and/or unavailable"),
    f("vmstorageDialTimeout", Duration, "3s", "Timeout for establishing RPC connections from vminsert to vmstorage"),
    f("vmstorageUserTimeout", Duration, "3s", "Network timeout for RPC connections from vminsert to vmstorage (Linux only). Lower values speed up re-rerouting recovery when some of vmstorage nodes become unavailable. 0 disables it"),
    f("rpc.handshakeTimeout", Duration, "5s", "Timeout for RPC handshake between vminsert and vmstorage"),
    f("rpc.disableCompression", Bool, "false", "Whether to disable compression of the data sent from vminsert to vmstorage. Deprecated: only affects legacy vmstorage connections"),
    f("rpc.shutdownFlushTimeout", Duration, "5s", "shardgate: how long graceful shutdown waits for buffered rows to reach storage nodes before dropping them"),
    f("clusternativeListenAddr", Str, "", "TCP address to listen for data from other vminsert nodes in multi-level cluster setup. Non-empty value also changes the shard hash seed"),
    f("clusternative.vminsertConnsShutdownDuration", Duration, "25s", "The time needed for gradual closing of upstream vminsert connections during graceful shutdown"),
    f("enableTCP6", Bool, "false", "Whether to enable IPv6 for listening and dialing. By default, only IPv4 TCP and UDP are used"),
    f("memory.allowedPercent", Float, "60", "Allowed percent of system memory VictoriaMetrics caches may occupy"),
    f("memory.allowedBytes", Bytes, "0", "Allowed size of system memory VictoriaMetrics caches may occupy. This option overrides -memory.allowedPercent if set to a non-zero value"),
    f("maxConcurrentInserts", Int, "", "The maximum number of concurrent insert requests. Default value depends on the number of available CPU cores (2 x cores)"),
    f("insert.maxQueueDuration", Duration, "1m", "The maximum duration to wait in the queue when -maxConcurrentInserts concurrent insert requests are executed"),
    // Series processing.
    f("maxLabelsPerTimeseries", Int, "40", "The maximum number of labels per time series to be accepted. Series with superfluous labels are ignored"),
    f("maxLabelNameLen", Int, "256", "The maximum length of label name in the accepted time series. Series with longer label name are ignored"),
    f("maxLabelValueLen", Int, "4096", "The maximum length of label values in the accepted time series. Series with longer label value are ignored"),
    f("sortLabels", Bool, "false", "Whether to sort labels for incoming samples before writing them to storage"),
    f("relabelConfig", Str, "", "Optional path to a file with relabeling rules, which are applied to all the ingested metrics. Reloaded on SIGHUP"),
    f("relabelConfigCheckInterval", Duration, "0s", "Interval for checking for changes in -relabelConfig file. By default the checking is disabled. Send SIGHUP signal in order to force config check for changes"),
    f("usePromCompatibleNaming", Bool, "false", "Whether to replace characters unsupported by Prometheus with underscores in the ingested metric names and label names"),
    f("enableMetadata", Bool, "true", "Whether to process metric metadata (HELP, TYPE, UNIT) and forward it to vmstorage"),
    f("enableMultitenancyViaHeaders", Bool, "true", "Enables multitenancy via AccountID and ProjectID HTTP headers for /insert/<suffix> paths"),
    // Listeners.
    f("httpListenAddr", Array, "", "TCP address to listen for incoming http requests. Defaults to :8480 when empty"),
    f("httpListenAddr.useProxyProtocol", BoolArray, "", "Whether to use proxy protocol for connections accepted at the given -httpListenAddr"),
    f("graphiteListenAddr", Str, "", "TCP and UDP address to listen for Graphite plaintext data. Usually :2003 must be set. Doesn't work if empty"),
    f("graphiteListenAddr.useProxyProtocol", Bool, "false", "Whether to use proxy protocol for connections accepted at -graphiteListenAddr"),
    f("graphiteTrimTimestamp", Duration, "1s", "Trim timestamps for Graphite data to this duration. Minimum practical duration is 1s"),
    f("graphite.sanitizeMetricName", Bool, "false", "Sanitize metric names for the ingested Graphite data"),
    f("influxListenAddr", Str, "", "TCP and UDP address to listen for InfluxDB line protocol data. Usually :8089 must be set. Doesn't work if empty"),
    f("influxListenAddr.useProxyProtocol", Bool, "false", "Whether to use proxy protocol for connections accepted at -influxListenAddr"),
    f("influxMeasurementFieldSeparator", Str, "_", "Separator for '{measurement}{separator}{field_name}' metric name when inserted via InfluxDB line protocol"),
    f("influxSkipSingleField", Bool, "false", "Uses '{measurement}' instead of '{measurement}{separator}{field_name}' for metric name if InfluxDB line contains only a single field"),
    f("influxSkipMeasurement", Bool, "false", "Uses '{field_name}' as a metric name while ignoring '{measurement}' and '-influxMeasurementFieldSeparator'"),
    f("influxDBLabel", Str, "db", "Default label for the DB name sent over '?db={db_name}' query parameter"),
    f("influxTrimTimestamp", Duration, "1ms", "Trim timestamps for InfluxDB line protocol data to this duration"),
    f("influx.databaseNames", Array, "", "Comma-separated list of database names to return from /query and /influx/query API"),
    f("influx.forceStreamMode", Bool, "false", "Force stream mode parsing for ingested data"),
    f("influx.maxLineSize", Bytes, "262144", "The maximum size in bytes for a single InfluxDB line during parsing"),
    f("influx.maxRequestSize", Bytes, "67108864", "The maximum size in bytes of a single InfluxDB request"),
    f("opentsdbListenAddr", Str, "", "TCP and UDP address to listen for OpenTSDB metrics. Usually :4242 must be set. Doesn't work if empty"),
    f("opentsdbListenAddr.useProxyProtocol", Bool, "false", "Whether to use proxy protocol for connections accepted at -opentsdbListenAddr"),
    f("opentsdbTrimTimestamp", Duration, "1s", "Trim timestamps for OpenTSDB 'telnet put' data to this duration"),
    f("opentsdbHTTPListenAddr", Str, "", "TCP address to listen for OpenTSDB HTTP put requests. Usually :4242 must be set. Doesn't work if empty"),
    f("opentsdbHTTPListenAddr.useProxyProtocol", Bool, "false", "Whether to use proxy protocol for connections accepted at -opentsdbHTTPListenAddr"),
    f("opentsdbhttp.maxInsertRequestSize", Bytes, "33554432", "The maximum size of OpenTSDB HTTP put request"),
    f("opentsdbhttpTrimTimestamp", Duration, "1ms", "Trim timestamps for OpenTSDB HTTP data to this duration"),
    f("maxInsertRequestSize", Bytes, "33554432", "The maximum size in bytes of a single Prometheus remote_write API request"),
    f("import.maxLineLen", Bytes, "10485760", "The maximum length in bytes of a single line accepted by /api/v1/import"),
    f("csvTrimTimestamp", Duration, "1ms", "Trim timestamps when importing csv data to this duration"),
    f("datadog.maxInsertRequestSize", Bytes, "67108864", "The maximum size in bytes of a single DataDog POST request"),
    f("datadog.sanitizeMetricName", Bool, "true", "Sanitize metric names for the ingested DataDog data to comply with DataDog behaviour"),
    f("newrelic.maxInsertRequestSize", Bytes, "67108864", "The maximum size in bytes of a single NewRelic request"),
    f("opentelemetry.maxRequestSize", Bytes, "67108864", "The maximum size in bytes of a single OpenTelemetry request"),
    f("opentelemetry.usePrometheusNaming", Bool, "false", "Whether to convert metric names and labels into Prometheus-compatible format for the metrics ingested via OpenTelemetry protocol"),
    f("opentelemetry.convertMetricNamesToPrometheus", Bool, "false", "Whether to convert only metric names into Prometheus-compatible format for the metrics ingested via OpenTelemetry protocol"),
    f("opentelemetry.labelNameUnderscoreSanitization", Bool, "true", "Enable prepending of 'key' to labels starting with '_'"),
    f("opentelemetry.promoteAllResourceAttributes", Bool, "true", "Whether to promote all resource attributes to labels"),
    f("opentelemetry.promoteResourceAttributes", Array, "", "Resource attributes to promote to labels"),
    f("opentelemetry.ignoreResourceAttributes", Array, "", "Resource attributes not to promote to labels"),
    f("opentelemetry.promoteScopeMetadata", Bool, "true", "Whether to promote scope name and version to labels"),
    f("zabbixconnector.maxLineLen", Bytes, "33554432", "The maximum length in bytes of a single line accepted by Zabbix connector"),
    f("zabbixconnector.addGroupsValue", Str, "", "Value for host group labels"),
    f("zabbixconnector.addEmptyTagsValue", Str, "", "Value for tags with empty values"),
    f("zabbixconnector.addDuplicateTagsSeparator", Str, "", "Separator for duplicate tag values"),
    // HTTP server.
    f("http.pathPrefix", Str, "", "An optional prefix to add to all the paths handled by http server"),
    f("http.shutdownDelay", Duration, "0s", "Optional delay before http server shutdown. During this delay, the server returns non-OK responses from /health page"),
    f("http.maxGracefulShutdownDuration", Duration, "7s", "The maximum duration for a graceful shutdown of the HTTP server"),
    f("http.connTimeout", Duration, "2m", "Incoming connections to -httpListenAddr are closed after the configured timeout"),
    f("http.idleConnTimeout", Duration, "1m", "Timeout for incoming idle http connections"),
    f("http.disableKeepAlive", Bool, "false", "Whether to disable HTTP keep-alive for incoming connections at -httpListenAddr"),
    f("http.disableResponseCompression", Bool, "false", "Disable compression of HTTP responses to save CPU resources"),
    f("http.disableCORS", Bool, "false", "Disable CORS for all origins (*)"),
    f("http.header.hsts", Str, "", "Value for 'Strict-Transport-Security' header"),
    f("http.header.frameOptions", Str, "", "Value for 'X-Frame-Options' header"),
    f("http.header.csp", Str, "", "Value for 'Content-Security-Policy' header"),
    f("http.header.disableServerHostname", Bool, "false", "Whether to disable the X-Server-Hostname header in HTTP responses"),
    f("httpAuth.username", Str, "", "Username for HTTP server's Basic Auth"),
    f("httpAuth.password", Str, "", "Password for HTTP server's Basic Auth"),
    f("metricsAuthKey", Str, "", "Auth key for /metrics endpoint. It must be passed via authKey query arg"),
    f("flagsAuthKey", Str, "", "Auth key for /flags endpoint. It must be passed via authKey query arg"),
    f("pprofAuthKey", Str, "", "Auth key for /debug/pprof/* endpoints. It must be passed via authKey query arg"),
    f("tls", BoolArray, "", "Whether to enable TLS for incoming HTTP requests at the given -httpListenAddr"),
    f("tlsCertFile", Array, "", "Path to file with TLS certificate for the corresponding -httpListenAddr"),
    f("tlsKeyFile", Array, "", "Path to file with TLS key for the corresponding -httpListenAddr"),
    f("tlsCipherSuites", Array, "", "Optional list of TLS cipher suites for incoming requests over HTTPS"),
    f("tlsMinVersion", Array, "", "Optional minimum TLS version to use for the corresponding -httpListenAddr"),
    // Process and logging.
    f("envflag.enable", Bool, "false", "Whether to enable reading flags from environment variables in addition to the command line. Command line flag values have priority over values from environment vars"),
    f("envflag.prefix", Str, "", "Prefix for environment variables if -envflag.enable is set"),
    f("loggerLevel", Str, "INFO", "Minimum level of errors to log. Possible values: INFO, WARN, ERROR, FATAL, PANIC"),
    f("loggerFormat", Str, "default", "Format for logs. Possible values: default, json"),
    f("loggerOutput", Str, "stderr", "Output for the logs. Supported values: stderr, stdout"),
    f("loggerTimezone", Str, "UTC", "Timezone to use for timestamps in logs"),
    f("loggerDisableTimestamps", Bool, "false", "Whether to disable writing timestamps in logs"),
    f("loggerJSONFields", Str, "", "Allows renaming fields in JSON formatted logs"),
    f("loggerMaxArgLen", Int, "5000", "The maximum length of a single logged argument"),
    f("loggerErrorsPerSecondLimit", Int, "0", "Per-second limit on the number of ERROR messages. 0 means no limit"),
    f("loggerWarnsPerSecondLimit", Int, "0", "Per-second limit on the number of WARN messages. 0 means no limit"),
    f("metrics.exposeMetadata", Bool, "false", "Whether to expose TYPE and HELP metadata at the /metrics page"),
    f("pushmetrics.url", Array, "", "Optional URL to push metrics exposed at /metrics page"),
    f("pushmetrics.interval", Duration, "10s", "Interval for pushing metrics to every -pushmetrics.url"),
    f("pushmetrics.extraLabel", Array, "", "Optional labels to add to metrics pushed to every -pushmetrics.url"),
    f("pushmetrics.header", Array, "", "Optional HTTP request header to send to every -pushmetrics.url"),
    f("pushmetrics.disableCompression", Bool, "false", "Whether to disable request body compression when pushing metrics to every -pushmetrics.url"),
    f("secret.flags", Array, "", "Comma-separated list of flag names with secret values. Values for these flags are hidden in logs and on /metrics page"),
    // Linked storage libraries: accepted for command-line compatibility, no effect.
    f("blockcache.missesBeforeCaching", Int, "2", "Ignored (storage library flag kept for command-line compatibility)"),
    f("cacheExpireDuration", Duration, "30m", "Ignored (storage library flag kept for command-line compatibility)"),
    f("prevCacheRemovalPercent", Float, "0.1", "Ignored (storage library flag kept for command-line compatibility)"),
    f("denyQueryTracing", Bool, "false", "Ignored (storage library flag kept for command-line compatibility)"),
    f("filestream.disableFadvise", Bool, "false", "Ignored (storage library flag kept for command-line compatibility)"),
    f("fs.disableMincore", Bool, "false", "Ignored (storage library flag kept for command-line compatibility)"),
    f("fs.disableMmap", Bool, "false", "Ignored (storage library flag kept for command-line compatibility)"),
    f("fs.maxConcurrency", Int, "32", "Ignored (storage library flag kept for command-line compatibility)"),
    f("internStringCacheExpireDuration", Duration, "6m", "Ignored (storage library flag kept for command-line compatibility)"),
    f("internStringDisableCache", Bool, "false", "Ignored (storage library flag kept for command-line compatibility)"),
    f("internStringMaxLen", Int, "500", "Ignored (storage library flag kept for command-line compatibility)"),
];

/// The storage-node stand-in's flags.
pub static NODE_FLAGS: &[FlagDef] = &[
    f("vminsertAddr", Str, ":8400", "TCP address to accept connections from vminsert (or shardgate) on"),
    f("httpListenAddr", Array, "", "TCP address for the stand-in's HTTP API (/api/v1/export, /readonly, /health, /metrics). Defaults to :8482 when empty"),
    f("storageDataPath", Str, "./shardgate-node-data", "Directory holding the stand-in's row log"),
    f("readOnly", Bool, "false", "Start in read-only mode: every block is answered with the read-only reply. Toggle later with SIGUSR1 (on) / SIGUSR2 (off) or POST /readonly?enabled=1|0"),
    f("rpc.handshakeTimeout", Duration, "5s", "Deadline for a client's whole handshake"),
    f("envflag.enable", Bool, "false", "Whether to enable reading flags from environment variables in addition to the command line"),
    f("envflag.prefix", Str, "", "Prefix for environment variables if -envflag.enable is set"),
    f("loggerLevel", Str, "INFO", "Minimum level of errors to log. Possible values: INFO, WARN, ERROR, FATAL, PANIC"),
];

/// A parsed flag value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Str(String),
    Int(i64),
    Float(f64),
    Duration(Duration),
    Bytes(u64),
    Array(Vec<String>),
    BoolArray(Vec<bool>),
}

/// Why the command line was refused. The text names the flag, as Go's `flag` package does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagError {
    /// `-help`/`-h`: print usage and exit 0.
    Help,
    /// `-version`: print the version and exit 0.
    Version,
    Unknown(String),
    MissingValue(String),
    BadValue {
        flag: String,
        value: String,
        reason: String,
    },
    /// Arguments that are not flags.
    Unprocessed(Vec<String>),
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Help => write!(f, "help requested"),
            FlagError::Version => write!(f, "version requested"),
            FlagError::Unknown(n) => write!(f, "flag provided but not defined: -{n}"),
            FlagError::MissingValue(n) => write!(f, "flag needs an argument: -{n}"),
            FlagError::BadValue {
                flag,
                value,
                reason,
            } => write!(f, "invalid value {value:?} for flag -{flag}: {reason}"),
            FlagError::Unprocessed(a) => {
                write!(f, "unprocessed command-line args left: {a:?}")
            }
        }
    }
}

impl std::error::Error for FlagError {}

/// The result of parsing: every flag of the table has a value.
#[derive(Clone, Debug)]
pub struct Flags {
    table: &'static [FlagDef],
    values: BTreeMap<&'static str, Value>,
    set: BTreeSet<&'static str>,
}

fn def_of(table: &'static [FlagDef], name: &str) -> Option<&'static FlagDef> {
    table.iter().find(|d| d.name == name)
}

/// Parse `args` (without the program name). `env` looks up environment variables; pass
/// `|k| std::env::var(k).ok()` in production.
pub fn parse(
    table: &'static [FlagDef],
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Flags, FlagError> {
    let mut flags = Flags {
        table,
        values: BTreeMap::new(),
        set: BTreeSet::new(),
    };
    for d in table {
        let v = default_value(d).map_err(|reason| FlagError::BadValue {
            flag: d.name.to_string(),
            value: d.default.to_string(),
            reason,
        })?;
        flags.values.insert(d.name, v);
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| expand_env(a, env, 0))
        .filter(|a| !a.is_empty())
        .collect();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        let Some(body) = arg.strip_prefix('-') else {
            i -= 1;
            break;
        };
        let body = body.strip_prefix('-').unwrap_or(body);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::BadValue {
                flag: arg.clone(),
                value: arg.clone(),
                reason: "bad flag syntax".into(),
            });
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name == "help" || name == "h" {
            return Err(FlagError::Help);
        }
        if name == "version" {
            return Err(FlagError::Version);
        }
        let Some(d) = def_of(table, name) else {
            return Err(FlagError::Unknown(name.to_string()));
        };
        let value = match (inline, d.kind) {
            (Some(v), _) => v,
            (None, Bool) => "true".to_string(),
            (None, _) => {
                let Some(v) = args.get(i) else {
                    return Err(FlagError::MissingValue(name.to_string()));
                };
                i += 1;
                v.clone()
            }
        };
        flags.apply(d, &value, true)?;
    }
    if i < args.len() {
        return Err(FlagError::Unprocessed(args[i..].to_vec()));
    }
    // envflag: only the command line can turn it on or choose the prefix.
    if flags.bool("envflag.enable") {
        let prefix = flags.str("envflag.prefix").to_string();
        for d in table {
            if flags.set.contains(d.name) {
                continue;
            }
            let key = format!("{prefix}{}", d.name.replace('.', "_"));
            if let Some(v) = env(&key) {
                let v = expand_env(&v, env, 0);
                flags.apply(d, &v, true)?;
            }
        }
    }
    Ok(flags)
}

/// Replace `%{NAME}` with the environment value of NAME, recursively (bounded); unknown
/// placeholders stay as written.
fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>, depth: u32) -> String {
    if depth > 10 || !s.contains("%{") {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("%{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match env(name) {
                    Some(v) => out.push_str(&expand_env(&v, env, depth + 1)),
                    None => {
                        out.push_str("%{");
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn default_value(d: &FlagDef) -> Result<Value, String> {
    match d.kind {
        Array => Ok(Value::Array(Vec::new())),
        BoolArray => Ok(Value::BoolArray(Vec::new())),
        Int if d.default.is_empty() => Ok(Value::Int(0)),
        _ => parse_value(d.kind, d.default),
    }
}

fn parse_value(kind: Kind, v: &str) -> Result<Value, String> {
    match kind {
        Bool => parse_bool(v).map(Value::Bool),
        Str => Ok(Value::Str(v.to_string())),
        Int => v
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|e| format!("parse error: {e}")),
        Float => v
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|e| format!("parse error: {e}")),
        Duration => parse_duration(v).map(Value::Duration),
        Bytes => parse_bytes(v).map(Value::Bytes),
        Array | BoolArray => unreachable!("arrays are appended item by item"),
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("parse error: not a boolean".into()),
    }
}

impl Flags {
    fn apply(&mut self, d: &'static FlagDef, v: &str, from_user: bool) -> Result<(), FlagError> {
        let bad = |reason: String| FlagError::BadValue {
            flag: d.name.to_string(),
            value: v.to_string(),
            reason,
        };
        let new = match d.kind {
            Array | BoolArray => {
                let items = split_array(v);
                // A repeated flag appends; the first user value replaces the (empty) default.
                let first = !self.set.contains(d.name);
                match (d.kind, self.values.get_mut(d.name)) {
                    (Array, Some(Value::Array(list))) => {
                        if first {
                            list.clear();
                        }
                        list.extend(items);
                    }
                    (BoolArray, Some(Value::BoolArray(list))) => {
                        if first {
                            list.clear();
                        }
                        for it in items {
                            list.push(if it.is_empty() {
                                false
                            } else {
                                parse_bool(&it).map_err(bad)?
                            });
                        }
                    }
                    _ => unreachable!("array flags always hold an array"),
                }
                None
            }
            kind => Some(parse_value(kind, v).map_err(bad)?),
        };
        if let Some(new) = new {
            self.values.insert(d.name, new);
        }
        if from_user {
            self.set.insert(d.name);
        }
        Ok(())
    }

    fn get(&self, name: &str) -> &Value {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("flag -{name} is not declared"))
    }

    /// Whether the user set the flag (command line or environment).
    pub fn is_set(&self, name: &str) -> bool {
        self.set.contains(name)
    }

    pub fn bool(&self, name: &str) -> bool {
        match self.get(name) {
            Value::Bool(b) => *b,
            v => panic!("flag -{name} is not a bool: {v:?}"),
        }
    }

    pub fn str(&self, name: &str) -> &str {
        match self.get(name) {
            Value::Str(s) => s,
            v => panic!("flag -{name} is not a string: {v:?}"),
        }
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Value::Int(n) => *n,
            v => panic!("flag -{name} is not an int: {v:?}"),
        }
    }

    pub fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Value::Float(n) => *n,
            v => panic!("flag -{name} is not a float: {v:?}"),
        }
    }

    pub fn duration(&self, name: &str) -> Duration {
        match self.get(name) {
            Value::Duration(d) => *d,
            v => panic!("flag -{name} is not a duration: {v:?}"),
        }
    }

    pub fn bytes(&self, name: &str) -> u64 {
        match self.get(name) {
            Value::Bytes(n) => *n,
            v => panic!("flag -{name} is not a size: {v:?}"),
        }
    }

    pub fn list(&self, name: &str) -> &[String] {
        match self.get(name) {
            Value::Array(l) => l,
            v => panic!("flag -{name} is not an array: {v:?}"),
        }
    }

    pub fn bool_list(&self, name: &str) -> &[bool] {
        match self.get(name) {
            Value::BoolArray(l) => l,
            v => panic!("flag -{name} is not a bool array: {v:?}"),
        }
    }

    /// Every flag as `-name=value` lines, for `/flags`. Secret flags print as `secret`.
    pub fn render(&self) -> String {
        let secrets: Vec<&str> = match self.values.get("secret.flags") {
            Some(Value::Array(l)) => l.iter().map(|s| s.as_str()).collect(),
            _ => Vec::new(),
        };
        let mut out = String::new();
        for d in self.table {
            let hidden = d.name.ends_with("password")
                || d.name.ends_with("AuthKey")
                || secrets.contains(&d.name);
            let v = if hidden && self.is_set(d.name) {
                "secret".to_string()
            } else {
                display_value(self.get(d.name))
            };
            out.push_str(&format!("-{}={:?}\n", d.name, v));
        }
        out
    }

    /// `(name, value, is_set)` per flag, for the `flag{...}` series on /metrics.
    pub fn entries(&self) -> Vec<(&'static str, String, bool)> {
        self.table
            .iter()
            .map(|d| {
                let hidden = d.name.ends_with("password") || d.name.ends_with("AuthKey");
                let v = if hidden && self.is_set(d.name) {
                    "secret".to_string()
                } else {
                    display_value(self.get(d.name))
                };
                (d.name, v, self.is_set(d.name))
            })
            .collect()
    }
}

fn display_value(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Float(n) => n.to_string(),
        Value::Duration(d) => format_duration(*d),
        Value::Bytes(n) => n.to_string(),
        Value::Array(l) => l.join(","),
        Value::BoolArray(l) => l
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Go's `time.Duration.String` for the values flags use (h, m, s, ms, µs, ns).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", trim_frac(ns as f64 / 1e3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", trim_frac(ns as f64 / 1e6));
    }
    let total_s = d.as_secs();
    let h = total_s / 3600;
    let m = (total_s % 3600) / 60;
    let s = (total_s % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_frac(s)));
    out
}

fn trim_frac(x: f64) -> String {
    let s = format!("{x:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Split an array flag value on commas that are outside quotes and brackets, then unquote
/// each item (spec §1.1).
pub fn split_array(v: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth: i32 = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut cur = String::new();
    for c in v.chars() {
        if let Some(q) = quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            '[' | '{' | '(' => {
                depth += 1;
                cur.push(c);
            }
            ']' | '}' | ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth <= 0 => items.push(unquote(&std::mem::take(&mut cur))),
            _ => cur.push(c),
        }
    }
    items.push(unquote(&cur));
    items
}

fn unquote(item: &str) -> String {
    let b = item.as_bytes();
    if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' {
        if let Some(s) = go_unquote(&item[1..item.len() - 1]) {
            return s;
        }
        return item.to_string();
    }
    if b.len() >= 2 && b[0] == b'\'' && b[b.len() - 1] == b'\'' {
        return item[1..item.len() - 1]
            .replace("\\'", "'")
            .replace("\\\\", "\\");
    }
    item.to_string()
}

/// The common escapes of a Go double-quoted string; `None` if one is malformed.
fn go_unquote(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'x' => {
                let h: String = it.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&h, 16).ok()?));
            }
            'u' => {
                let h: String = it.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Go's `time.ParseDuration`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("time: invalid duration {s:?}");
    let mut rest = s;
    let neg = if let Some(r) = rest.strip_prefix('-') {
        rest = r;
        true
    } else {
        if let Some(r) = rest.strip_prefix('+') {
            rest = r;
        }
        false
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let num = &rest[..num_end];
        if num.is_empty() || num == "." {
            return Err(err());
        }
        let n: f64 = num.parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    if neg && total > 0.0 {
        return Err(format!("negative duration {s:?} is not allowed"));
    }
    if !total.is_finite() || total > 1e10 {
        return Err(format!("time: invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// VictoriaMetrics' size flag: a number with an optional decimal or binary suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("KiB", 1024.0),
        ("MiB", 1024.0 * 1024.0),
        ("GiB", 1024.0 * 1024.0 * 1024.0),
        ("TiB", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("KB", 1e3),
        ("MB", 1e6),
        ("GB", 1e9),
        ("TB", 1e12),
    ];
    for (suf, mul) in SUFFIXES {
        if let Some(num) = s.strip_suffix(suf) {
            let n: f64 = num
                .parse()
                .map_err(|_| format!("cannot parse size {s:?}"))?;
            if !(0.0..1.8e19).contains(&n) || !(n * mul).is_finite() || n * mul >= 1.8e19 {
                return Err(format!("size {s:?} is out of range"));
            }
            return Ok((n * mul) as u64);
        }
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    match s.parse::<f64>() {
        Ok(n) if (0.0..1.8e19).contains(&n) => Ok(n as u64),
        _ => Err(format!(
            "cannot parse size {s:?}; want a number with an optional KB, MB, GB, TB, KiB, MiB, GiB or TiB suffix"
        )),
    }
}

/// The `-help` text: one entry per flag with its default and description, as Go prints it.
pub fn usage(program: &str, about: &str, table: &[FlagDef]) -> String {
    let mut out = format!("{about}\n\nUsage of {program}:\n");
    let mut defs: Vec<&FlagDef> = table.iter().collect();
    defs.sort_by_key(|d| d.name);
    for d in defs {
        let kind = match d.kind {
            Bool => "",
            Str => " string",
            Int => " int",
            Float => " float",
            Duration => " duration",
            Bytes => " size",
            Array => " array",
            BoolArray => " array",
        };
        out.push_str(&format!("  -{}{}\n    \t{}", d.name, kind, d.help));
        let shown_default = match (d.kind, d.default) {
            (Bool, "false") | (_, "") => None,
            (Str, v) => Some(format!("{v:?}")),
            (_, v) => Some(v.to_string()),
        };
        if let Some(v) = shown_default {
            out.push_str(&format!(" (default {v})"));
        }
        if matches!(d.kind, Array | BoolArray) {
            out.push_str("\n    \tSupports an array of values separated by comma or specified via multiple flags.");
        }
        if d.kind == Bytes {
            out.push_str("\n    \tSupports the following optional suffixes for size values: KB, MB, GB, TB, KiB, MiB, GiB, TiB");
        }
        out.push('\n');
    }
    out
}

/// Parse the process's own arguments; on `-help`, `-version` or an error print and exit the
/// way Go's flag package does (help/version: 0, errors: 2).
pub fn parse_or_exit(table: &'static [FlagDef], about: &str) -> Flags {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let program = std::env::args()
        .next()
        .unwrap_or_else(|| "shardgate".into());
    match parse(table, &args, &|k| std::env::var(k).ok()) {
        Ok(f) => f,
        Err(FlagError::Help) => {
            print!("{}", usage(&program, about, table));
            std::process::exit(0);
        }
        Err(FlagError::Version) => {
            println!("{}", crate::version());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("Run `{program} -help` for the list of flags");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Flags, FlagError> {
        p_env(args, &[])
    }

    fn p_env(args: &[&str], env: &[(&str, &str)]) -> Result<Flags, FlagError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(GATEWAY_FLAGS, &args, &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn every_spelling_of_a_value() {
        let f = p(&[
            "-replicationFactor=2",
            "--vmstorageDialTimeout=1m30s",
            "-rpc.handshakeTimeout",
            "200ms",
            "-sortLabels",
            "-enableMetadata=false",
            "--maxInsertRequestSize=1.5MiB",
        ])
        .unwrap();
        assert_eq!(f.int("replicationFactor"), 2);
        assert_eq!(f.duration("vmstorageDialTimeout"), Duration::from_secs(90));
        assert_eq!(
            f.duration("rpc.handshakeTimeout"),
            Duration::from_millis(200)
        );
        assert!(f.bool("sortLabels"));
        assert!(!f.bool("enableMetadata"));
        assert_eq!(f.bytes("maxInsertRequestSize"), 1_572_864);
        assert!(f.is_set("sortLabels"));
        assert!(!f.is_set("disableRerouting"));
    }

    #[test]
    fn defaults_come_from_the_table() {
        let f = p(&[]).unwrap();
        assert_eq!(
            f.duration("insert.maxQueueDuration"),
            Duration::from_secs(60)
        );
        assert_eq!(f.bytes("maxInsertRequestSize"), 32 * 1024 * 1024);
        assert_eq!(f.str("storageNode.placement"), "rendezvous");
        assert!(f.bool("enableMultitenancyViaHeaders"));
        assert!(f.list("storageNode").is_empty());
        assert_eq!(f.float("memory.allowedPercent"), 60.0);
    }

    #[test]
    fn arrays_append_across_repeats_and_commas() {
        let f = p(&[
            "-storageNode=a,b",
            "-storageNode",
            "c",
            "--storageNode=d:8401",
        ])
        .unwrap();
        assert_eq!(f.list("storageNode"), ["a", "b", "c", "d:8401"]);
        let f = p(&["-storageNode=\"x,y\",'p\\'q',[1,2],{a,b}"]).unwrap();
        assert_eq!(f.list("storageNode"), ["x,y", "p'q", "[1,2]", "{a,b}"]);
        let f = p(&["-storageNode="]).unwrap();
        assert_eq!(f.list("storageNode"), [""]);
        let f = p(&["-tls=true,,false", "-tls=1"]).unwrap();
        assert_eq!(f.bool_list("tls"), [true, false, false, true]);
    }

    #[test]
    fn bad_input_names_the_flag() {
        let e = p(&["-noSuchFlag=1"]).unwrap_err();
        assert_eq!(e, FlagError::Unknown("noSuchFlag".into()));
        assert!(e.to_string().contains("-noSuchFlag"));
        let e = p(&["-replicationFactor=two"]).unwrap_err();
        assert!(e.to_string().contains("-replicationFactor"), "{e}");
        let e = p(&["-vmstorageDialTimeout=3"]).unwrap_err();
        assert!(e.to_string().contains("missing unit"), "{e}");
        let e = p(&["-maxInsertRequestSize=12XB"]).unwrap_err();
        assert!(e.to_string().contains("-maxInsertRequestSize"), "{e}");
        assert_eq!(
            p(&["-vmstorageDialTimeout"]).unwrap_err(),
            FlagError::MissingValue("vmstorageDialTimeout".into())
        );
        // A bool flag takes no separate value: "false" is left over.
        assert_eq!(
            p(&["-sortLabels", "false"]).unwrap_err(),
            FlagError::Unprocessed(vec!["false".into()])
        );
        assert_eq!(
            p(&["-sortLabels=maybe"]).unwrap_err().to_string(),
            "invalid value \"maybe\" for flag -sortLabels: parse error: not a boolean"
        );
        assert_eq!(p(&["-help"]).unwrap_err(), FlagError::Help);
        assert_eq!(p(&["--version"]).unwrap_err(), FlagError::Version);
    }

    #[test]
    fn envflag_follows_the_naming_rule_and_the_command_line_wins() {
        let env = [
            ("VM_storageNode", "a,b"),
            ("VM_rpc_disableCompression", "true"),
            ("VM_replicationFactor", "3"),
            ("VM_sortLabels", "%{SORT}"),
            ("SORT", "true"),
        ];
        let f = p_env(
            &[
                "-envflag.enable",
                "-envflag.prefix=VM_",
                "-replicationFactor=2",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(f.list("storageNode"), ["a", "b"]);
        assert!(f.bool("rpc.disableCompression"));
        assert_eq!(f.int("replicationFactor"), 2);
        assert!(f.bool("sortLabels"));
        // Off unless enabled on the command line.
        let f = p_env(&["-envflag.prefix=VM_"], &env).unwrap();
        assert!(f.list("storageNode").is_empty());
        // A bad environment value is fatal too.
        let e = p_env(&["-envflag.enable"], &[("replicationFactor", "x")]).unwrap_err();
        assert!(e.to_string().contains("-replicationFactor"));
    }

    #[test]
    fn placeholders_expand_in_arguments() {
        let f = p_env(&["-storageNode=%{HOST}:8400,%{NOPE}"], &[("HOST", "db1")]).unwrap();
        assert_eq!(f.list("storageNode"), ["db1:8400", "%{NOPE}"]);
        // An argument that expands to nothing is dropped.
        let f = p_env(&["%{EMPTY}", "-sortLabels"], &[("EMPTY", "")]).unwrap();
        assert!(f.bool("sortLabels"));
    }

    #[test]
    fn go_durations_and_sizes() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("1h2m3.5s").unwrap(),
            Duration::from_millis(3_723_500)
        );
        assert_eq!(parse_duration("1.5us").unwrap(), Duration::from_nanos(1500));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_bytes("10KB").unwrap(), 10_000);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("123").unwrap(), 123);
        assert!(parse_bytes("1kb").is_err());
        assert!(parse_bytes("-1MB").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_secs(7)), "7s");
    }

    #[test]
    fn help_lists_every_flag_with_default() {
        let u = usage("shardgate", "about", GATEWAY_FLAGS);
        for d in GATEWAY_FLAGS {
            assert!(u.contains(&format!("  -{}", d.name)), "{} missing", d.name);
        }
        assert!(u.contains("(default 1m)"));
        assert!(u.contains("(default \"rendezvous\")"));
        let nu = usage("shardgate-node", "about", NODE_FLAGS);
        assert!(nu.contains("-vminsertAddr string"));
    }

    #[test]
    fn every_default_parses_and_names_are_unique() {
        for table in [GATEWAY_FLAGS, NODE_FLAGS] {
            let mut names: Vec<&str> = table.iter().map(|d| d.name).collect();
            names.sort();
            let n = names.len();
            names.dedup();
            assert_eq!(n, names.len(), "duplicate flag names");
            let f = parse(table, &[], &|_| None).unwrap();
            assert!(f.render().lines().count() == table.len());
        }
    }
}
