//! The deployment files stay true: the sidecar's embedded configuration passes `check-config`,
//! and every metric the Grafana dashboard queries is one jwtgate exports.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;
use serde_json::Value;

#[test]
fn the_kubernetes_configmap_passes_check_config() {
    let text = std::fs::read_to_string("deploy/kubernetes/jwtgate-sidecar.yaml").unwrap();
    let mut configs = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        let Some(toml) = v["data"]["jwtgate.toml"].as_str() else { continue };
        let dir = temp_dir("deploy");
        let path = dir.join("jwtgate.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .env_remove("JWTGATE_CONFIG")
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        configs += 1;
    }
    assert_eq!(configs, 1, "the manifest carries one jwtgate.toml");
}

#[test]
fn the_manifest_keeps_admin_on_loopback_and_admits_only_jwtgates_ports() {
    let text = std::fs::read_to_string("deploy/kubernetes/jwtgate-sidecar.yaml").unwrap();
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let toml_text = docs.iter().find_map(|d| d["data"]["jwtgate.toml"].as_str()).unwrap();
    let config = jwtgate::config::Config::parse(toml_text, None).unwrap();
    assert!(config.server.admin_listen.ip().is_loopback(), "/status and /reload stay inside the pod");
    assert!(config.server.watch_config_seconds > 0, "a ConfigMap update must reach the running sidecar");
    let health = config.server.health_listen.expect("probes need a health listener").port();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
    let jwtgate = containers.iter().find(|c| c["name"] == "jwtgate").unwrap();
    let port_named = |name: &str| {
        jwtgate["ports"].as_sequence().unwrap().iter().find(|p| p["name"] == name).map(|p| p["containerPort"].as_u64())
    };
    for probe in ["readinessProbe", "livenessProbe"] {
        let port = jwtgate[probe]["httpGet"]["port"].as_str().unwrap();
        assert_eq!(port_named(port), Some(Some(u64::from(health))), "{probe} on the health listener");
    }
    assert!(port_named("admin").is_none(), "the admin port is not exposed");
    let policy = docs.iter().find(|d| d["kind"] == "NetworkPolicy").expect("a NetworkPolicy");
    let mut admitted: Vec<u64> = policy["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_sequence().unwrap().iter().map(|p| p["port"].as_u64().unwrap()))
        .collect();
    admitted.sort_unstable();
    assert_eq!(admitted, [u64::from(config.server.listen.port()), u64::from(health)]);
    // The API is not a port of the pod; the config volume is a folder (a subPath mount never
    // sees a ConfigMap update); voluntary disruptions keep a replica.
    let api = containers.iter().find(|c| c["name"] == "api").unwrap();
    assert!(api["ports"].is_null(), "the API listens on 127.0.0.1 only: {api:?}");
    let mounts = jwtgate["volumeMounts"].as_sequence().unwrap();
    assert!(mounts.iter().all(|m| m["subPath"].is_null()), "{mounts:?}");
    assert!(docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    // No placeholder Secret is applied; the CronJob reads its secrets as files and is bounded.
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"), "the placeholder Secret lives in examples/");
    let cron = docs.iter().find(|d| d["kind"] == "CronJob").unwrap();
    let job = &cron["spec"]["jobTemplate"]["spec"];
    assert!(job["activeDeadlineSeconds"].as_u64().is_some_and(|s| s < 300), "a pass ends before the next one");
    assert!(job["backoffLimit"].as_u64().is_some());
    let pod = &job["template"]["spec"];
    assert!(pod["containers"][0]["envFrom"].is_null(), "secrets as files, not environment variables");
    assert!(pod["volumes"].as_sequence().unwrap().iter().any(|v| v["secret"]["secretName"] == "jwtgate-secrets"));
    let Some(jwtgate::config::KmSyncConfig::Off(Err(problems))) = Some(&config.key_manager_sync) else {
        panic!("the sidecars' sync is off and its secret files live only in the CronJob");
    };
    assert!(problems.iter().all(|p| !p.to_string().contains("password_env")), "{problems:?}");
}

fn yaml_docs(path: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

/// The sidecar manifest's embedded configuration.
fn manifest_config() -> jwtgate::config::Config {
    let docs = yaml_docs("deploy/kubernetes/jwtgate-sidecar.yaml");
    let toml_text = docs.iter().find_map(|d| d["data"]["jwtgate.toml"].as_str()).unwrap().to_string();
    jwtgate::config::Config::parse(&toml_text, None).unwrap()
}

#[test]
fn a_terminating_pod_keeps_serving_until_endpoints_stop_sending_and_drains_in_its_grace_period() {
    let config = manifest_config();
    let docs = yaml_docs("deploy/kubernetes/jwtgate-sidecar.yaml");
    let pod = &docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"];
    let delay = config.server.shutdown_delay_seconds;
    assert!(delay > 0, "a distroless image has no shell for a preStop sleep: jwtgate waits itself");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > delay + config.server.drain_timeout_seconds, "{grace} s of grace");
}

#[test]
fn the_native_sidecar_form_starts_jwtgate_first_and_uses_the_same_configuration() {
    let config = manifest_config();
    let main = yaml_docs("deploy/kubernetes/jwtgate-sidecar.yaml");
    let config_map = main.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["metadata"]["name"].clone();
    let docs = yaml_docs("deploy/kubernetes/examples/native-sidecar.yaml");
    let pod = &docs[0]["spec"]["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    assert_eq!(sidecar["name"], "jwtgate");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert!(pod["containers"].as_sequence().unwrap().iter().all(|c| c["name"] != "jwtgate"));
    let health = u64::from(config.server.health_listen.unwrap().port());
    let port_named = |name: &str| {
        sidecar["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(port_named(sidecar[probe]["httpGet"]["port"].as_str().unwrap()), Some(health), "{probe}");
    }
    assert_eq!(port_named("http"), Some(u64::from(config.server.listen.port())));
    assert_eq!(pod["volumes"][0]["configMap"]["name"], config_map);
    // The API is stopped first: its preStop sleep covers the endpoints' propagation.
    assert!(pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().is_some());
}

#[test]
fn the_prometheus_operator_resources_scrape_the_health_port_and_carry_the_shipped_rules() {
    let docs = yaml_docs("deploy/kubernetes/monitoring/jwtgate-monitoring.yaml");
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    let alerts: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("deploy/prometheus/jwtgate-alerts.yaml").unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], alerts["groups"], "the PrometheusRule is the alert file, unchanged");
    let monitor = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    let main = yaml_docs("deploy/kubernetes/jwtgate-sidecar.yaml");
    let service = main.iter().find(|d| d["kind"] == "Service").unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "the ServiceMonitor selects the Service");
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = service["spec"]["ports"].as_sequence().unwrap().iter().find(|p| p["name"] == endpoint["port"]).unwrap();
    assert_eq!(port["targetPort"], "health", "scraped on the health listener, never the admin one");
}

#[test]
fn the_container_image_listens_where_it_can_be_reached() {
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    let baked = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("COPY config/").and_then(|rest| rest.strip_suffix(" /etc/jwtgate/jwtgate.toml")))
        .expect("the Dockerfile bakes a configuration");
    let path = format!("config/{baked}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .env_remove("JWTGATE_CONFIG")
        .args(["check-config", "--config", &path])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let config = jwtgate::config::Config::load(std::path::Path::new(&path)).unwrap();
    assert!(config.server.listen.ip().is_unspecified(), "127.0.0.1 inside a container is unreachable from outside it");
    assert!(config.server.admin_listen.ip().is_loopback(), "/status and /reload stay inside");
    let health = config.server.health_listen.expect("probes need a reachable health listener");
    assert!(health.ip().is_unspecified());
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().map(|p| p.parse().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from([config.server.listen.port(), health.port()]));
    for label in
        ["org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source"]
    {
        assert!(dockerfile.contains(label), "{label}");
    }
    assert!(dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"), "a stripped binary");
    assert!(dockerfile.contains("USER nonroot"));
    let ignored = std::fs::read_to_string(".dockerignore").unwrap();
    assert!(ignored.lines().any(|l| l == "target/"), "the build context leaves target/ out");
}

/// The `jwtgate_*` metric families a PromQL expression names (histogram series mapped to their
/// family).
fn families(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices("jwtgate_") {
        let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let family = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        out.insert(family.to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_on_the_dashboard_is_exported() {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string("deploy/grafana/jwtgate.json").unwrap()).unwrap();
    let mut wanted = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            wanted.extend(families(target["expr"].as_str().unwrap()));
        }
    }
    assert!(wanted.len() >= 10, "{wanted:?}");
    let h = Harness::start().await;
    echoed(h.get_with("/api/x", &h.token("")).await).await;
    // Rejections are labelled by issuer and reason: their series appear with the first one.
    assert_eq!(h.get_with("/api/x", "not-a-jwt").await.status(), 401);
    let text = h.metrics().await;
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    // The key-manager sync's series come only from a process that runs the sync.
    let (sync, gateway): (BTreeSet<String>, BTreeSet<String>) =
        wanted.into_iter().partition(|f| f.starts_with("jwtgate_km_sync_"));
    let missing: Vec<&String> = gateway.difference(&exported).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics jwtgate does not export: {missing:?}");
    assert!(!text.contains("jwtgate_km_sync_"), "a gateway without the sync exports none of its series");
    let with_sync = jwtgate::metrics::Metrics::new();
    with_sync.export_km_sync(true);
    let text = with_sync.render();
    for f in &sync {
        assert!(text.contains(&format!("# TYPE {f} ")), "{f} is not a metric of the sync");
    }
    assert!(exported.contains("jwtgate_build_info"));
    assert!(text.contains(&format!("jwtgate_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
}

/// Starts `jwtgate serve` on `config_text` (JSON logs) and returns the child, its proxy address
/// and the receiver of its log lines. Not `support::spawn_serve_with`: that one sets
/// `RUST_LOG=info`, and this test is about what the default level writes.
async fn serve_with_json_logs(
    config_text: &str,
) -> (tokio::process::Child, String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::AsyncBufReadExt;
    let dir = temp_dir("deploy");
    let path = dir.join(format!("{:x}.toml", rand::random::<u64>()));
    std::fs::write(&path, config_text).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("JWTGATE_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let proxy = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(v) = rx.recv().await {
            if let Some(addr) = v["fields"]["proxy_addr"].as_str() {
                return addr.to_string();
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("serve listened in time");
    (child, proxy, rx)
}

/// The next `jwtgate::access` line.
async fn next_access(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let v = rx.recv().await.expect("log line");
            if v["target"] == "jwtgate::access" {
                return v["fields"].clone();
            }
        }
    })
    .await
    .expect("an access line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_line_per_request_and_never_the_token() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let key = idp.add_shared_key(harness_key());
    let upstream = EchoUpstream::start().await.unwrap();
    for with_subject in [false, true] {
        let server =
            format!("log_format = \"json\"\naccess_log = true\naccess_log_subject = {with_subject}\nrequest_id = true");
        let (_child, proxy, mut logs) =
            serve_with_json_logs(&config_text(&idp.discovery_url(), upstream.addr, "", &server)).await;
        let client = http_client();
        let token = key.token(&idp.claims(now(), "alice", AUD, "orders:read"));
        // Keys may still be loading: wait for the first 200.
        let mut status = 0;
        for _ in 0..100 {
            status = client
                .get(format!("http://{proxy}/orders/1"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if status == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(status, 200);
        let mut line = next_access(&mut logs).await;
        while line["status"] != 200 {
            line = next_access(&mut logs).await;
        }
        assert_eq!(line["method"], "GET");
        assert_eq!(line["route"], "orders-read");
        assert_eq!(line["outcome"], "allowed");
        assert_eq!(line["upstream_status"], 200);
        assert!(line["duration_ms"].as_f64().is_some(), "{line}");
        assert_eq!(line.get("sub").and_then(Value::as_str), with_subject.then_some("alice"), "{line}");
        assert!(!line.to_string().contains(&token[..40]), "the token is never logged");
        // A refusal: its outcome and reason; the path without its query, the client, the id.
        let r = client
            .get(format!("http://{proxy}/orders/1?secret=1"))
            .bearer_auth(format!("{token}x"))
            .header("x-request-id", "trace-me-7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let line = next_access(&mut logs).await;
        assert_eq!(line["path"], "/orders/1", "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
        assert_eq!(line["request_id"], "trace-me-7", "{line}");
        assert_eq!((line["status"].as_u64(), line["outcome"].as_str()), (Some(401), Some("invalid_token")), "{line}");
        assert!(line["reason"].as_str().is_some_and(|r| !r.is_empty()), "{line}");
        assert!(line.get("upstream_status").is_none() || line["upstream_status"].is_null(), "{line}");
    }
}

#[test]
fn the_readme_shows_the_front_proxy_files_that_the_tests_run() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    for file in ["deploy/nginx/auth_request.conf", "deploy/caddy/Caddyfile"] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(readme.contains(&text), "README.md must show {file} as it is (the tests run that file)");
    }
}

/// Runs `promtool ARGS` in deploy/prometheus; `None` when promtool is missing outside CI.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new("promtool").args(args).current_dir("deploy/prometheus").output() {
        Ok(out) => Some(out),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "promtool is required under CI (.ci/run installs prometheus)");
            eprintln!("promtool is not installed: skipping (apt-get install prometheus)");
            None
        }
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    for args in [&["check", "rules", "jwtgate-alerts.yaml"][..], &["test", "rules", "jwtgate-alerts.test.yaml"][..]] {
        let Some(out) = promtool(args) else { return };
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A port the system just handed out (Prometheus's web listener takes no Unix socket).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_jwtgate_and_every_dashboard_and_alert_expression_evaluates() {
    if promtool(&["--version"]).is_none() {
        return;
    }
    let h = Harness::start().await;
    let dir = temp_dir("prom");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 250ms, evaluation_interval: 250ms }}\nrule_files: [{:?}]\n\
             scrape_configs:\n  - job_name: jwtgate\n    static_configs: [{{ targets: [\"{}\"] }}]\n",
            std::fs::canonicalize("deploy/prometheus/jwtgate-alerts.yaml").unwrap(),
            h.gw.admin_addr
        ),
    )
    .unwrap();
    let mut prometheus = None;
    let mut base = String::new();
    for _ in 0..5 {
        let port = free_port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus");
        base = format!("http://127.0.0.1:{port}");
        let ready = format!("{base}/-/ready");
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if h.client.get(&ready).send().await.is_ok_and(|r| r.status() == 200) {
                prometheus = Some(child);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if prometheus.is_some() {
            break;
        }
    }
    let _prometheus = prometheus.expect("prometheus started");
    // Traffic of every kind while Prometheus scrapes a few times.
    let token = h.token("");
    let query = |expr: String| {
        let url = format!("{base}/api/v1/query");
        let client = h.client.clone();
        async move { client.get(url).query(&[("query", expr)]).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    wait_until("Prometheus has scraped jwtgate four times", || async {
        echoed(h.get_with("/api/x", &token).await).await;
        let _ = h.get_with("/api/x", "not-a-jwt").await;
        let _ = h.client.get(h.url("/api/x")).bearer_auth(&token).header("x-echo-status", "500").send().await;
        query("count_over_time(up{job=\"jwtgate\"}[1m])".into()).await["data"]["result"][0]["value"][1]
            .as_str()
            .is_some_and(|n| n.parse::<f64>().unwrap_or(0.0) >= 4.0)
    })
    .await;
    // Every dashboard expression parses and returns data (the sync's come from a process that
    // runs it: they parse, and are empty here by design).
    let dash: Value = serde_json::from_str(&std::fs::read_to_string("deploy/grafana/jwtgate.json").unwrap()).unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let v = query(expr.to_string()).await;
            assert_eq!(v["status"], "success", "{expr}: {v}");
            let empty = v["data"]["result"].as_array().is_none_or(|r| r.is_empty());
            let expect_data = !expr.contains("jwtgate_km_sync_") && !expr.contains("jwtgate_jwks_refetches_total");
            assert!(!expect_data || !empty, "{expr} returned no data: {v}");
        }
    }
    // Every alert expression parses against the live series, and the rules load.
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("deploy/prometheus/jwtgate-alerts.yaml").unwrap()).unwrap();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        let v = query(expr.to_string()).await;
        assert_eq!(v["status"], "success", "{}: {v}", rule["alert"].as_str().unwrap());
    }
    let loaded = h.client.get(format!("{base}/api/v1/rules")).send().await.unwrap().json::<Value>().await.unwrap();
    let n = loaded["data"]["groups"][0]["rules"].as_array().map_or(0, |r| r.len());
    assert_eq!(n, rules["groups"][0]["rules"].as_sequence().unwrap().len(), "{loaded}");
}
