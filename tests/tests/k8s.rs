//! The Kubernetes manifests (`deploy/k8s/`), offline:
//!
//! - `kubectl kustomize` renders each region's overlay, and every rendered
//!   object validates against the Kubernetes schema (`kubernetes-validate
//!   --strict`, which `.ci/run` installs);
//! - each region names itself and its pair, and the catalog both regions
//!   mount names the nodes the overlay's StatefulSet makes;
//! - every container is started as the rendered manifest starts it: its
//!   command (a binary of the workspace), its arguments with `$(VAR)`
//!   expanded from the env the manifest gives, its ConfigMaps and Secrets
//!   as files at their mount paths (test secrets: a throwaway CA, a token,
//!   a keys file), listen addresses mapped to loopback; the process must
//!   accept the configuration, become ready and answer health on the
//!   kubelet's port. So the manifests cannot drift from the binaries'
//!   flags.
//!
//! Without `kubectl` or `kubernetes-validate` the test says so and passes,
//! unless `CI` is set: then a missing tool is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tandem_common::tls::throwaway::{ThrowawayCa, LOOPBACK_NAMES};
use tandem_e2e::Proc;

const REGIONS: [(&str, &str, &str); 2] = [
    ("us-east-1", "us-east-2", "use1"),
    ("us-east-2", "us-east-1", "use2"),
];

/// Whether `program --help`-style `probe` runs; a missing tool fails the
/// test under CI and skips it elsewhere.
fn have(program: &str, probe: &[&str]) -> bool {
    let found = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing (CI installs it: see .ci/run)"
        );
        eprintln!("skipping: {program} is not installed");
    }
    found
}

/// The overlay of `region`, rendered (YAML).
fn render(region: &str) -> String {
    let dir = tandem_e2e::repo_root()
        .join("deploy/k8s/overlays")
        .join(region);
    let out = Command::new("kubectl")
        .args(["kustomize", &dir.display().to_string()])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {region}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The rendered objects, as JSON values (PyYAML, a dependency of
/// kubernetes-validate, reads the YAML).
fn objects(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), yaml.as_bytes())
        .expect("write yaml");
    let out = child.wait_with_output().expect("python3 output");
    assert!(out.status.success(), "the rendered YAML does not parse");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn validate(region: &str, yaml: &str, dir: &Path) {
    let file = dir.join(format!("{region}.yaml"));
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", &file.display().to_string()])
        .output()
        .expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "{region}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().expect("a name")
}

/// ConfigMap name -> its data.
type ConfigMaps = BTreeMap<String, BTreeMap<String, String>>;

/// The rendered ConfigMaps.
fn config_maps(objects: &[Value]) -> ConfigMaps {
    of_kind(objects, "ConfigMap")
        .map(|cm| {
            let data = cm["data"].as_object().expect("data");
            let data = data
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
                .collect();
            (name(cm).to_string(), data)
        })
        .collect()
}

/// The files the test puts where a Secret of the manifests is mounted.
fn secret_files(secret: &str, dir: &Path) -> BTreeMap<String, String> {
    match secret {
        "tandem-tls" => {
            let ca = ThrowawayCa::generate().expect("CA");
            let (cert, key) = ca.issue(&LOOPBACK_NAMES).expect("certificate");
            [
                ("tls.crt", cert),
                ("tls.key", key),
                ("ca.crt", ca.certificate_pem().expect("CA certificate")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        }
        "tandem-internal-token" => [(
            "internal-token".to_string(),
            tandem_e2e::INTERNAL_TOKEN.to_string(),
        )]
        .into(),
        "tandem-catalog-keys" => [(
            "keys.toml".to_string(),
            format!(
                "[keys.example]\napi_key_sha256 = [\"{}\"]\n",
                tandem_catalog::hash_key("example-key")
            ),
        )]
        .into(),
        "tandem-search-id-key" => [(
            "search-id.key".to_string(),
            "a search-id key of the test, long enough".to_string(),
        )]
        .into(),
        other => panic!(
            "{}: the test has no files for Secret {other}",
            dir.display()
        ),
    }
}

/// Puts each volume of `pod` in a directory under `root`; returns the
/// container's mount path -> local directory.
fn mount(pod: &Value, container: &Value, maps: &ConfigMaps, root: &Path) -> Vec<(String, PathBuf)> {
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().expect("mounts") {
        let volume_name = m["name"].as_str().expect("volume");
        let local = root.join(volume_name);
        std::fs::create_dir_all(&local).expect("mkdir");
        let volume = volumes.iter().find(|v| v["name"] == volume_name);
        let files = match volume {
            Some(v) if v["configMap"].is_object() => {
                let cm = v["configMap"]["name"].as_str().expect("name");
                maps.get(cm)
                    .unwrap_or_else(|| panic!("ConfigMap {cm} is not rendered"))
                    .clone()
            }
            Some(v) if v["secret"].is_object() => {
                secret_files(v["secret"]["secretName"].as_str().expect("secret"), &local)
            }
            // An emptyDir, a PersistentVolumeClaim, the StatefulSet's claim template:
            // an empty directory.
            _ => BTreeMap::new(),
        };
        for (file, text) in files {
            std::fs::write(local.join(file), to_loopback(&text)).expect("write");
        }
        mounts.push((m["mountPath"].as_str().expect("path").to_string(), local));
    }
    mounts
}

/// `text` with every catalog address mapped to a closed loopback port:
/// the processes dial their peers, and tests talk to 127.0.0.1 only.
fn to_loopback(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("addr = \"https://") {
            Some(_) => "addr = \"https://127.0.0.1:1\"".to_string(),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The variables the test's `tandem-object-store` Secret holds: an S3
/// endpoint on a closed loopback port, so that no process looks for
/// credentials or buckets beyond this machine.
const OBJECT_STORE_ENV: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ENDPOINT", "http://127.0.0.1:1"),
    ("AWS_ALLOW_HTTP", "true"),
];

/// The container's environment as the kubelet would set it (the first
/// pod's name for `metadata.name`).
fn environment(container: &Value, pod_name: &str, maps: &ConfigMaps) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for e in container["env"].as_array().cloned().unwrap_or_default() {
        let key = e["name"].as_str().expect("env name").to_string();
        let from = &e["valueFrom"];
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if from["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.to_string()
        } else if let Some(cm) = from["configMapKeyRef"]["name"].as_str() {
            let k = from["configMapKeyRef"]["key"].as_str().expect("key");
            maps[cm][k].clone()
        } else if from["secretKeyRef"]["name"] == "tandem-admin-token" {
            "a-test-admin-token".to_string()
        } else {
            panic!("the test cannot set env {key}: {e}");
        };
        env.push((key, value));
    }
    for from in container["envFrom"].as_array().cloned().unwrap_or_default() {
        assert_eq!(from["secretRef"]["name"], "tandem-object-store", "{from}");
        env.extend(OBJECT_STORE_ENV.map(|(k, v)| (k.to_string(), v.to_string())));
    }
    env
}

/// An argument as the container gets it, then mapped to this machine.
fn local_arg(arg: &str, env: &[(String, String)], mounts: &[(String, PathBuf)]) -> String {
    let mut arg = arg.to_string();
    for (key, value) in env {
        arg = arg.replace(&format!("$({key})"), value);
    }
    assert!(!arg.contains("$("), "an unexpanded variable in {arg}");
    if let Some((flag, addr)) = arg.split_once('=') {
        if addr.starts_with("0.0.0.0:") {
            return format!("{flag}=127.0.0.1:0");
        }
        for (path, local) in mounts {
            if let Some(rest) = addr.strip_prefix(path.as_str()) {
                return format!("{flag}={}{rest}", local.display());
            }
        }
    }
    arg
}

/// Starts the workload's container as its manifest says; it must become
/// ready and serve health on the kubelet's port.
async fn start_as_rendered(workload: &Value, maps: &ConfigMaps, root: &Path) {
    let pod = &workload["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let pod_name = format!("{}-0", name(workload));
    let mounts = mount(pod, container, maps, &root.join(&pod_name));
    let env = environment(container, &pod_name, maps);
    let command = container["command"][0].as_str().expect("command");
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| local_arg(a.as_str().expect("arg"), &env, &mounts))
        .collect();
    let proc = Proc::spawn_with_env(command, &args, &env)
        .unwrap_or_expect(&format!("{pod_name} ({command} {args:?})"));
    let health = proc
        .health
        .expect("a health-only port (the kubelet's probes)");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{health}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the health port");
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, 1, "{pod_name} is not SERVING");
    if command == "tandem-router" {
        assert!(proc.admin.is_some(), "the router serves its admin API");
    }
}

trait UnwrapOrExpect<T> {
    fn unwrap_or_expect(self, what: &str) -> T;
}

impl<T> UnwrapOrExpect<T> for anyhow::Result<T> {
    fn unwrap_or_expect(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("{what} does not start: {e:#}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_renders_validates_and_its_processes_start_as_rendered() {
    if !(have("kubectl", &["version", "--client"]) && have("kubernetes-validate", &["--version"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (region, paired, short) in REGIONS {
        let yaml = render(region);
        validate(region, &yaml, dir.path());
        let objects = objects(&yaml);
        let maps = config_maps(&objects);
        let names = &maps[&format!("{short}-tandem-region")];
        assert_eq!(
            (names["region"].as_str(), names["paired"].as_str()),
            (region, paired)
        );
        let catalog = tandem_catalog::Catalog::parse(
            maps[&format!("{short}-tandem-catalog")]["catalog.toml"].as_bytes(),
        )
        .expect("the catalog the fleet mounts is valid");
        let set = of_kind(&objects, "StatefulSet")
            .next()
            .expect("index-nodes");
        let replicas = set["spec"]["replicas"].as_u64().expect("replicas");
        for i in 0..replicas {
            let id = format!("{}-{i}", name(set));
            let node = catalog
                .node(&id)
                .unwrap_or_else(|| panic!("the catalog does not name {id}"));
            assert_eq!(&*node.region, region);
        }
        assert!(catalog.node(&format!("{short}-router")).is_some());
        for kind in ["StatefulSet", "Deployment"] {
            for workload in of_kind(&objects, kind) {
                start_as_rendered(workload, &maps, &dir.path().join(region)).await;
            }
        }
    }
}
