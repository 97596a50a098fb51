//! Prometheus metrics end to end (issue 18 item 1): Debian's `prometheus` scrapes swrouter's
//! `/metrics` in the router's namespace while a client fetches through a WCCP cache, and its
//! query API must see the redirected-packets counter move; promtool checks the scraped text.
//!
//! ```text
//! client 10.0.1.2 ── eth0 10.0.1.1 [swrouter] eth1 10.0.2.1 ── server 10.0.2.2
//!                         eth2 10.0.3.1 ── cache 10.0.3.2 (swcache + Squid)
//! router namespace's loopback: swrouter 127.0.0.1:9469 (/metrics) ← prometheus 127.0.0.1:9090
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use crate::wccp_variants::WccpLab;
use integration::binary;
use integration::wccplab::{wait_for, CacheHost};
use netlab::Ns;
use std::time::Duration;

const METRICS: &str = "127.0.0.1:9469";
const PROMETHEUS: &str = "127.0.0.1:9090";

/// Fails with the way to install it when Debian's prometheus (and its promtool) is missing.
fn require_prometheus() {
    for tool in ["prometheus", "promtool"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is not installed: run scripts/setup-debian.sh (it installs Debian's prometheus package)"
        );
    }
}

/// `curl` in `ns`: (HTTP status, body).
fn get(ns: &Ns, url: &str) -> (u16, String) {
    let out = ns
        .run("curl", &["-sS", "-m", "5", "-w", "\n%{http_code}", url])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `swrouter reload`: (ok, message).
fn reload(l: &WccpLab) -> (bool, String) {
    let out = std::process::Command::new(binary("swrouter"))
        .args(["reload", "-s", &l.socket.to_string_lossy()])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Writes the router config with `metrics-listen = addr` (or without the key).
fn set_metrics_listen(l: &WccpLab, addr: Option<&str>) {
    let path = l.lab.dir().join("router.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("metrics-listen"))
        .collect();
    let mut text = kept.join("\n") + "\n";
    if let Some(a) = addr {
        text = text.replacen(
            "[router]\n",
            &format!("[router]\nmetrics-listen = \"{a}\"\n"),
            1,
        );
    }
    std::fs::write(&path, text).unwrap();
}

/// The value of the first sample a PromQL query returns, asked of prometheus' HTTP API.
fn query(rtr: &Ns, promql: &str) -> Option<f64> {
    let out = rtr
        .run(
            "curl",
            &[
                "-sS",
                "-m",
                "3",
                "-G",
                &format!("http://{PROMETHEUS}/api/v1/query"),
                "--data-urlencode",
                &format!("query={promql}"),
            ],
        )
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_redirected_packets() {
    require_prometheus();
    let wccp = "[[wccp.service]]\nid = 0\nprobe-port = 3128\n";
    let mut l = WccpLab::new("mtx", 1, ["wccp-redirect-in = [0]", "", ""], wccp);
    let rtr = l
        .lab
        .namespaces()
        .iter()
        .find(|n| n.name.ends_with("-rtr"))
        .unwrap()
        .clone();
    let ns = l.caches[0].clone();
    let mut host = CacheHost::new(
        &l.lab,
        &ns,
        "cache-m",
        "10.0.3.2".parse().unwrap(),
        "10.0.3.1".parse().unwrap(),
    )
    .unwrap();
    host.start(&mut l.lab).unwrap();

    // Off by default; a reload that sets metrics-listen opens it.
    assert_eq!(get(&rtr, &format!("http://{METRICS}/metrics")).0, 0);
    set_metrics_listen(&l, Some(METRICS));
    let (ok, msg) = reload(&l);
    assert!(ok, "{msg}{}", l.logs(&[&host]));
    let (code, body) = get(&rtr, &format!("http://{METRICS}/metrics"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("# TYPE swrouter_wccp_redirected_packets_total counter"));
    assert_eq!(get(&rtr, &format!("http://{METRICS}/")).0, 404);

    // Prometheus in the router's namespace, its storage in the lab's dir (removed on teardown,
    // as prometheus itself is stopped).
    let dir = l.lab.dir().join("prometheus");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let conf = dir.join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: swrouter\n    static_configs:\n      - targets: [\"{METRICS}\"]\n"
        ),
    )
    .unwrap();
    let prom = l
        .lab
        .spawn(
            &rtr,
            "prometheus",
            &[
                &format!("--config.file={}", conf.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address={PROMETHEUS}"),
            ],
        )
        .unwrap();

    // A port in use (prometheus' own) rejects the reload by name; the running listener stays.
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            (get(&rtr, &format!("http://{PROMETHEUS}/-/ready")).0 == 200).then_some(())
        })
        .is_some(),
        "prometheus did not come up: {}",
        l.lab.logs(&prom)
    );
    set_metrics_listen(&l, Some(PROMETHEUS));
    let (ok, msg) = reload(&l);
    assert!(
        !ok && msg.contains(&format!("metrics-listen {PROMETHEUS}: cannot listen there")),
        "{msg}"
    );
    assert_eq!(get(&rtr, &format!("http://{METRICS}/metrics")).0, 200);
    set_metrics_listen(&l, Some(METRICS));

    l.wait_assigned("10.0.3.2", &[&host]);
    host.wait_squid(Duration::from_secs(15)).unwrap();
    for i in 0..3 {
        let (ok, text, via) = l.fetch(&format!("http://10.0.2.2/file?{i}"));
        assert!(
            ok && via.is_some_and(|v| v.contains("cache-m")),
            "{text}{}",
            l.logs(&[&host])
        );
    }

    // Prometheus scrapes each second: the counter it stored must have moved.
    let redirected = wait_for(Duration::from_secs(15), Duration::from_millis(500), || {
        query(
            &rtr,
            "swrouter_wccp_redirected_packets_total{service=\"0\"}",
        )
        .filter(|v| *v > 0.0)
    });
    assert!(
        redirected.is_some(),
        "prometheus never saw redirected packets; prometheus log:\n{}\nscrape:\n{}",
        l.lab.logs(&prom),
        get(&rtr, &format!("http://{METRICS}/metrics")).1
    );
    assert_eq!(query(&rtr, "up{job=\"swrouter\"}"), Some(1.0));
    let per_cache = query(
        &rtr,
        "swrouter_wccp_cache_redirected_packets_total{service=\"0\",cache=\"10.0.3.2\"}",
    );
    assert!(per_cache.is_some_and(|v| v > 0.0), "{per_cache:?}");

    // The scraped text passes promtool's lint.
    let (_, body) = get(&rtr, &format!("http://{METRICS}/metrics"));
    let check = std::process::Command::new("sh")
        .args(["-c", "promtool check metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The status document names the listener and counts the scrapes.
    let s = integration::wccplab::router_status(&l.socket).unwrap();
    assert_eq!(s["metrics"]["listen"], METRICS);
    assert!(
        s["metrics"]["served"].as_u64().unwrap() >= 2,
        "{}",
        s["metrics"]
    );

    // A reload with another address moves the listener: the old port closes.
    let _ = l.lab.stop(&prom, Duration::from_secs(5));
    set_metrics_listen(&l, Some("127.0.0.1:9470"));
    let (ok, msg) = reload(&l);
    assert!(ok, "{msg}");
    assert_eq!(get(&rtr, "http://127.0.0.1:9470/metrics").0, 200);
    assert_eq!(get(&rtr, &format!("http://{METRICS}/metrics")).0, 0);
    host.stop(&mut l.lab);
}
