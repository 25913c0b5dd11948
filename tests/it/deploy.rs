//! The deployment files under `deploy/` (docs/deploy.md): the ConfigMap embeds
//! `deploy/kubernetes/wxvault.toml` verbatim, the example configurations load with the real
//! configuration loader, and the manifests and units agree with them (ports, grace periods).
//! `.ci/run` validates the manifests against the Kubernetes schemas and the units with
//! `systemd-analyze`; these tests check what those tools cannot know.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The text of the `wxvault.toml: |` block scalar of the ConfigMap, de-indented as YAML does.
fn embedded_config(configmap: &str) -> String {
    let mut lines = configmap.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end() == "  wxvault.toml: |")
        .expect("configmap.yaml has a `wxvault.toml: |` entry under data");
    let block: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.starts_with("    "))
        .collect();
    let mut text = String::new();
    for line in block {
        text.push_str(line.strip_prefix("    ").unwrap_or(""));
        text.push('\n');
    }
    // YAML's `|` keeps exactly one final newline.
    format!("{}\n", text.trim_end_matches('\n'))
}

/// The value of `key` in `[section]` of a TOML text, unquoted and without a trailing comment.
fn toml_value(text: &str, section: &str, key: &str) -> String {
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_string();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((k, v)) = trimmed.split_once('=')
            && k.trim() == key
        {
            let v = v.split(" #").next().unwrap_or("").trim();
            return v.trim_matches('"').to_string();
        }
    }
    panic!("no {key} in [{section}]")
}

/// Loads `text` with the real loader from a file in `dir`.
fn load(dir: &Path, text: &str) -> Result<engine::Config, String> {
    let path = dir.join("wxvault.toml");
    std::fs::write(&path, text).unwrap();
    engine::Config::load(Some(&path)).map_err(|e| e.to_string())
}

/// Loads an example configuration with the real loader: every key it sets must be known.
fn load_example(rel: &str) -> (engine::Config, String) {
    let text = read(rel);
    let dir = tempfile::tempdir().unwrap();
    let config = load(dir.path(), &text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    (config, text)
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{listen:?} has no port"))
}

/// Every `key: N` line's N in a YAML text.
fn yaml_numbers(yaml: &str, key: &str) -> Vec<u64> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().parse().expect("a number"))
        .collect()
}

/// The lines nested under the first `key` line of a YAML text (deeper indented than it).
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines();
    let Some(head) = lines.by_ref().find(|l| l.trim() == key) else {
        panic!("no {key} in the manifest");
    };
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_configmap_embeds_the_kubernetes_config_file_verbatim() {
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let file = read("deploy/kubernetes/wxvault.toml");
    assert_eq!(
        embedded_config(&configmap),
        file,
        "deploy/kubernetes/configmap.yaml must embed deploy/kubernetes/wxvault.toml verbatim \
         (indented by four spaces)"
    );
}

#[test]
fn the_kubernetes_config_loads_and_matches_the_manifests() {
    let (config, text) = load_example("deploy/kubernetes/wxvault.toml");
    assert!(config.database.url.starts_with("postgres://"));
    let db = url::Url::parse(&config.database.url).unwrap();
    assert_eq!(
        db.password(),
        None,
        "no password in the database URL: it comes from PGPASSWORD"
    );
    assert!(
        !config.storage.url.starts_with("file://"),
        "workers on several nodes need an object store"
    );

    let serve = read("deploy/kubernetes/serve.yaml");
    let worker = read("deploy/kubernetes/worker.yaml");
    assert_eq!(
        yaml_numbers(&serve, "containerPort"),
        vec![u64::from(port_of(&config.serve.listen))],
        "serve.yaml's port is [serve] listen's"
    );
    assert_eq!(
        yaml_numbers(&worker, "containerPort"),
        vec![u64::from(port_of(&toml_value(&text, "worker", "listen")))],
        "worker.yaml's port is [worker] listen's"
    );
    let grace: u64 = toml_value(&text, "serve", "shutdown_grace_seconds")
        .parse()
        .unwrap();
    for (name, yaml) in [("serve.yaml", &serve), ("worker.yaml", &worker)] {
        let periods = yaml_numbers(yaml, "terminationGracePeriodSeconds");
        assert!(
            !periods.is_empty() && periods.iter().all(|p| *p > grace),
            "{name}: terminationGracePeriodSeconds {periods:?} must exceed shutdown_grace_seconds {grace}"
        );
        assert!(
            yaml.contains("path: /healthz") && yaml.contains("path: /readyz"),
            "{name}"
        );
        // Each readiness check may take up to 5 s; a probe timeout under it would fail a
        // slow-but-ready pod.
        let timeouts = yaml_numbers(&yaml_block(yaml, "readinessProbe:"), "timeoutSeconds");
        assert!(
            timeouts.len() == 1
                && u128::from(timeouts[0]) * 1000 > webapp::CHECK_TIMEOUT.as_millis(),
            "{name}: the readiness probe's timeoutSeconds {timeouts:?} must exceed the readiness check timeout"
        );
        assert!(yaml.contains("value: /etc/wxvault/wxvault.toml"), "{name}");
    }
}

#[test]
fn the_secret_template_holds_placeholders_only() {
    let secret = read("deploy/kubernetes/secret.yaml");
    let mut names = Vec::new();
    let mut in_data = false;
    for line in secret.lines() {
        if line.starts_with("stringData:") {
            in_data = true;
            continue;
        }
        if in_data
            && let Some((key, value)) = line.trim().split_once(": ")
            && !line.trim().starts_with('#')
        {
            assert!(
                value.trim_matches('"').starts_with("REPLACE"),
                "{key} must be a placeholder"
            );
            names.push(key.to_string());
        }
    }
    for needed in ["WXVAULT_MASTER_KEY", "WXVAULT_CLIENT_SECRET", "PGPASSWORD"] {
        assert!(
            names.iter().any(|n| n == needed),
            "secret.yaml lacks {needed}"
        );
    }
}

#[test]
fn the_systemd_config_loads_and_the_units_outlast_the_grace() {
    let (config, text) = load_example("deploy/systemd/wxvault.toml");
    assert!(
        config.serve.listen.starts_with("127.0.0.1:"),
        "behind a reverse proxy"
    );
    let grace: u64 = toml_value(&text, "serve", "shutdown_grace_seconds")
        .parse()
        .unwrap();
    for unit in ["wxvault.service", "wxvault-worker.service"] {
        let text = read(&format!("deploy/systemd/{unit}"));
        let stop: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .unwrap_or_else(|| panic!("{unit} has no TimeoutStopSec="))
            .trim()
            .parse()
            .unwrap();
        assert!(
            stop > grace,
            "{unit}: TimeoutStopSec={stop} must exceed {grace}"
        );
        assert!(text.contains("KillSignal=SIGTERM"), "{unit}");
        assert!(
            text.contains("EnvironmentFile=/etc/wxvault/wxvault.env"),
            "{unit}"
        );
        assert!(
            text.contains("Environment=WXVAULT_CONFIG=/etc/wxvault/wxvault.toml"),
            "{unit}"
        );
    }
    let env = read("deploy/systemd/wxvault.env");
    for line in env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (key, value) = line.split_once('=').unwrap();
        assert!(value.starts_with("REPLACE"), "{key} must be a placeholder");
    }
}

#[test]
fn the_embedded_block_is_read_as_yaml_reads_it() {
    let yaml = "data:\n  wxvault.toml: |\n    [a]\n\n    b = 1\n\n  other: x\n";
    assert_eq!(embedded_config(yaml), "[a]\n\nb = 1\n");
}
