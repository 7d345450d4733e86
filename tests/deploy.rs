//! The deployment files work as shipped: the systemd unit verifies and is hardened, the
//! Grafana dashboard queries only metrics Palisade exports, and the critical alerts fire on
//! what they are for (promtool), and the HAProxy configuration the docs show is the shipped
//! file, valid as it is. Needs `systemd-analyze`, `promtool` and `haproxy` (Debian: systemd,
//! prometheus, haproxy); `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::server::Palisade;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> Command {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| Path::new(d).join(name).exists());
    assert!(
        found,
        "`{name}` is needed for this test (Debian: apt-get install systemd prometheus)"
    );
    Command::new(name)
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    // A root holding the binary where the unit expects it and the system's own units.
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_palisade"), r.join("usr/local/bin/palisade")).unwrap();
    let unit = root().join("deploy/systemd/palisade.service");
    std::fs::copy(&unit, r.join("etc/systemd/system/palisade.service")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let copied = Command::new("cp")
        .args([
            "-r",
            "/usr/lib/systemd/system",
            r.join("usr/lib/systemd/").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copied.success(), "copying the system's units");
    let out = tool("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            &format!("--root={}", r.display()),
            "palisade.service",
        ])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    let out = tool("systemd-analyze")
        .args(["security", "--offline=true", unit.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for palisade.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");

    // Everything it must write is in its state directory, not the read-only /etc/palisade.
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    let env_text = std::fs::read_to_string(root().join("deploy/systemd/palisade.env")).unwrap();
    assert!(
        unit_text.contains("PALISADE_API_TOKEN_FILE=/var/lib/palisade/"),
        "{unit_text}"
    );
    assert!(unit_text.contains("PALISADE_DATA_PATH=/var/lib/palisade"));
    assert!(
        !env_text.lines().any(|l| l.starts_with("PALISADE_API_TOKEN_FILE=/etc")),
        "{env_text}"
    );
    assert!(unit_text.contains("LimitCORE=0"));
}

/// The docs show the shipped file (which `ha-local.sh` and the failover benchmark run), and
/// HAProxy accepts it in HTTP mode, the mode in which it reads statuses and retries a 503.
#[test]
fn the_documented_haproxy_config_is_the_one_that_runs() {
    let shipped = std::fs::read_to_string(root().join("deploy/haproxy/palisade.cfg")).unwrap();
    let doc = std::fs::read_to_string(root().join("docs/high-availability.md")).unwrap();
    assert!(
        doc.contains(&format!("```haproxy\n{shipped}```")),
        "docs/high-availability.md does not show deploy/haproxy/palisade.cfg as it is"
    );
    let defaults = shipped.split("\ndefaults").nth(1).expect("a defaults section");
    assert!(
        defaults.contains("\n    mode http\n"),
        "not in HTTP mode: a 503 would not be retried"
    );
    assert!(defaults.contains("retry-on conn-failure empty-response 503"));
    for script in ["deploy/ha-local.sh", "bench/src/failover.rs"] {
        let text = std::fs::read_to_string(root().join(script)).unwrap();
        assert!(
            text.contains("deploy/haproxy/palisade.cfg"),
            "{script} runs another configuration"
        );
    }
    let out = tool("haproxy")
        .args(["-c", "-f"])
        .arg(root().join("deploy/haproxy/palisade.cfg"))
        .env("PALISADE_LISTEN", "127.0.0.1:9000")
        .env("PALISADE_REPLICA_1", "127.0.0.1:9001")
        .env("PALISADE_REPLICA_2", "127.0.0.1:9002")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "haproxy -c:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every variable of the shipped environment file is one `palisade serve` reads.
#[test]
fn the_environment_file_names_real_options() {
    let help = testkit::server::serve_help();
    let env_text = std::fs::read_to_string(root().join("deploy/systemd/palisade.env")).unwrap();
    let names: Vec<&str> = env_text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    assert!(
        names.contains(&"PALISADE_DATABASE_PASSWORD_FILE"),
        "the unit keeps the password in a file"
    );
    for name in names {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{name} is not an option of `palisade serve`"
        );
    }
}

/// Every alert of the rules file has a rule test that expects it to fire.
#[test]
fn every_alert_has_a_rule_test() {
    let dir = root().join("deploy/prometheus");
    let rules = std::fs::read_to_string(dir.join("palisade-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("palisade-alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in alerts {
        // An `alertname:` entry followed by a non-empty `exp_alerts`.
        let fired = tests
            .split("- eval_time:")
            .any(|case| case.contains(&format!("alertname: {alert}\n")) && case.contains("exp_labels"));
        assert!(fired, "{alert}: no rule test expects it to fire");
    }
}

#[test]
fn the_alerts_fire_on_their_failures() {
    let out = tool("promtool")
        .current_dir(root().join("deploy/prometheus"))
        .args(["test", "rules", "palisade-alerts.test.yml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every query of the dashboard uses metrics Palisade exports (or Prometheus's `up`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_real_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/palisade.json")).unwrap()).unwrap();
    let p = Palisade::serve(&["--network", "minimal"]);
    let exposition = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    // The job is a variable of the dashboard, not a name written into its queries.
    assert!(exprs.iter().all(|e| !e.contains(r#"job="palisade""#)), "{exprs:?}");
    assert!(
        dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "job"),
        "no job variable"
    );
    let mut seen = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("palisade_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exposition.lines().any(|l| l.starts_with(&name)),
                "the dashboard uses {name}, which Palisade does not export"
            );
            seen.insert(name.clone());
            rest = &rest[i + name.len()..];
        }
    }
    for wanted in [
        "palisade_signing_requests_total",
        "palisade_slashing_refusals_total",
        "palisade_signing_duration_seconds_bucket",
        "palisade_database_up",
        "palisade_database_latency_seconds",
        "palisade_keys",
        "palisade_replicas",
    ] {
        assert!(seen.contains(wanted), "the dashboard does not show {wanted}");
    }
}

/// Metrics on their own listener (`--metrics-port`) with their own host allow-list, in the
/// format the scraper asks for: `promtool check metrics` accepts the text format, OpenMetrics
/// for those that ask; the process's own metrics, the build and readiness are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_apart_in_the_format_asked_for() {
    let p = Palisade::serve(&[
        "--network",
        "minimal",
        "--metrics-port",
        "0",
        "--metrics-host-allowlist",
        "monitoring.internal",
        "--ready-min-keys",
        "0",
    ]);
    let addr = testkit::wait::until(
        "the metrics listener is logged",
        std::time::Duration::from_secs(30),
        || {
            let log = p.log();
            async move {
                log.lines()
                    .find_map(|l| l.split("metrics listening on http://").nth(1))
                    .map(|rest| rest.split('/').next().unwrap().to_string())
            }
        },
    )
    .await;
    let client = reqwest::Client::new();
    let get = |host: &'static str, accept: &'static str| {
        client
            .get(format!("http://{addr}/metrics"))
            .header("host", host)
            .header("accept", accept)
            .send()
    };
    // The monitoring host's name is let in; another is not (a DNS-rebinding page).
    let text = get("monitoring.internal", "*/*").await.unwrap();
    assert_eq!(text.status(), 200);
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = text.text().await.unwrap();
    assert_eq!(get("evil.example", "*/*").await.unwrap().status(), 403);
    // Not on the signing port any more.
    assert_eq!(reqwest::get(p.url("/metrics")).await.unwrap().status(), 404);

    for needed in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "palisade_build_info{version=",
        "palisade_ready ",
        "# TYPE palisade_signing_requests_total counter",
    ] {
        assert!(text.contains(needed), "{needed} missing:\n{text}");
    }
    assert!(!text.contains("# EOF"));
    let mut check = tool("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits non-zero on lint remarks too; a format error is what must not be there.
    assert!(
        !said.contains("error while linting") && !said.contains("parse"),
        "promtool check metrics:\n{said}"
    );

    let om = get(
        "monitoring.internal",
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
    )
    .await
    .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE palisade_signing_requests counter"), "{om}");
}
