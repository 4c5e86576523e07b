//! The simulator end to end, on the example scenarios in examples/simulate/.

use std::path::{Path, PathBuf};

use omega_simulate::scenario::Scenario;
use omega_simulate::{Loaded, run, shrink, sweep, timeline};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/simulate")
        .join(name)
}

fn load(name: &str) -> Loaded {
    Scenario::load(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_example_scenario_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/simulate");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "{n} example scenarios");
}

#[test]
fn same_seed_same_report_and_timeline_byte_for_byte() {
    let loaded = load("homelab.toml");
    let a = run(&loaded, 3);
    let b = run(&loaded, 3);
    assert_eq!(a.report.to_json(), b.report.to_json());
    assert_eq!(
        timeline::html(&a.timeline, &a.report),
        timeline::html(&b.timeline, &b.report)
    );
    assert!(a.report.to_text().contains("reproduce: omega simulate"));
    assert!(a.report.tool.starts_with("omega-simulate "));
    let c = run(&loaded, 4);
    assert_ne!(
        a.report.to_json(),
        c.report.to_json(),
        "another seed, another run"
    );
}

#[test]
fn the_home_lab_survives_its_faults_and_says_what_happened() {
    let loaded = load("homelab.toml");
    let out = run(&loaded, 1);
    let r = &out.report;
    assert!(r.passed(), "{}", r.to_text());
    assert!(r.convergence.converged_at_ms.is_some());
    // Coverage: the faults and paths the pass is about did happen.
    for k in [
        "crashes",
        "power losses",
        "partitions healed",
        "messages dropped",
        "messages duplicated",
        "messages reordered",
        "suspicions",
        "retries",
        "dead letters",
        "failed processings",
        "placement moves",
        "slow disks",
    ] {
        assert!(
            r.coverage.get(k).copied().unwrap_or(0) > 0,
            "coverage {k}: {}",
            r.to_text()
        );
    }
    assert!(r.events.processed > 1000 && r.events.pending == 0);
    assert!(r.events.dead_lettered > 0, "poison ends as dead letters");
    assert!(!r.reroute_ms.is_empty(), "a crash of a replica re-routed");
}

#[test]
fn a_power_loss_under_interval_sync_loses_acknowledged_events_and_shrinks() {
    let loaded = load("power-loss.toml");
    let out = run(&loaded, 1);
    let v = out
        .report
        .violation
        .clone()
        .expect("the interval-sync power loss is caught");
    assert_eq!(v.invariant, "no-acknowledged-event-lost");
    assert!(
        v.trace.iter().any(|l| l.contains("power loss of pi-1")),
        "{v:?}"
    );
    assert!(out.report.coverage["unsynced writes lost"] > 0);

    let s = shrink::shrink(&loaded, 1, &out.report, 48).expect("shrinks");
    assert_eq!(
        s.report.violation.as_ref().map(|v| v.invariant.as_str()),
        Some("no-acknowledged-event-lost")
    );
    let before = &loaded.scenario;
    assert!(
        s.scenario.faults.len() < before.faults.len()
            && s.scenario.node_count() <= before.node_count()
            && s.scenario.duration <= before.duration,
        "smaller: {}",
        s.scenario.to_toml()
    );
    // The printed scenario reproduces the failure on its own.
    let text = s.scenario.to_toml();
    let again = Scenario::parse(&text, "shrunk.toml")
        .unwrap()
        .check("shrunk.toml")
        .unwrap();
    let out2 = run(&again, 1);
    assert_eq!(
        out2.report.violation.map(|v| v.invariant),
        Some("no-acknowledged-event-lost".into())
    );

    // The same power loss with `sync = "always"` loses nothing.
    let mut always = loaded.scenario.clone();
    always.disk.sync = "always".into();
    let always = always.check("power-loss-always.toml").unwrap();
    let out3 = run(&always, 1);
    assert!(out3.report.passed(), "{}", out3.report.to_text());
}

#[test]
fn forged_and_tampered_records_never_take_effect() {
    let mut s = load("homelab.toml").scenario;
    s.duration = omega_simulate::scenario::Dur(90_000);
    s.faults = vec![
        toml::from_str::<FaultOnly>(
            "[fault]\nat = \"20s\"\nkind = \"byzantine\"\nnode = \"pi-2\"\nevery = \"500ms\"\nfor = \"30s\"\n",
        )
        .unwrap()
        .fault,
    ];
    let loaded = s.check("byzantine.toml").unwrap();
    let out = run(&loaded, 5);
    let r = &out.report;
    assert!(r.passed(), "{}", r.to_text());
    assert!(r.coverage["byzantine messages"] >= 300, "{:?}", r.coverage);
    assert!(
        r.coverage.get("refusals").copied().unwrap_or(0) > 0,
        "{:?}",
        r.coverage
    );
}

#[derive(serde::Deserialize)]
struct FaultOnly {
    fault: omega_simulate::scenario::Fault,
}

#[test]
fn two_hundred_seeds_of_the_fault_scenario_pass() {
    // CI's sweep: the home lab's faults under 200 seeds (each a different
    // interleaving, loss pattern and choice of victims), on both cores.
    let loaded = load("homelab.toml");
    let seeds: Vec<u64> = (0..200).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = seeds
            .chunks(100)
            .map(|chunk| {
                let loaded = &loaded;
                s.spawn(move || {
                    sweep(loaded, chunk[0]..chunk[chunk.len() - 1] + 1)
                        .into_iter()
                        .filter(|r| !r.passed())
                        .map(|r| format!("seed {}: {:?}", r.seed, r.violation))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn bad_scenarios_are_refused_with_what_and_where() {
    let base = std::fs::read_to_string(example("homelab.toml")).unwrap();
    for (edit, want) in [
        (
            base.replace(
                "substrate = \"biome\"\n\n[[nodes]]",
                "substrate = \"cloud\"\n\n[[nodes]]",
            ),
            "nodes[2].substrate",
        ),
        (
            base.replace("duration = \"3m\"", "duration = \"3 parsecs\""),
            "duration `3 parsecs`",
        ),
        (
            base.replace("rate = 20", "rate = 20\nburst = 3"),
            "unknown field `burst`",
        ),
        (
            base.replace("to = \"ingest\"", "to = \"nope\""),
            "workload[0].to",
        ),
        (
            base.replace("kind = \"slow_disk\"", "kind = \"meteor\""),
            "meteor",
        ),
        (
            base.replace("node = \"nas-1\"\nms = 40", "node = \"nas-1\""),
            "missing field `ms`",
        ),
        (
            base.replace("loss_per_mille = 5", "loss_per_mille = 5000"),
            "network.loss_per_mille",
        ),
        (
            base.replace("sync = \"always\"", "sync = \"sometimes\""),
            "disk.sync",
        ),
    ] {
        let err = Scenario::parse(&edit, "bad.toml")
            .and_then(|s| s.check("bad.toml"))
            .expect_err(want);
        let msg = err.to_string();
        assert!(
            msg.contains(want) && msg.contains("bad.toml"),
            "{want}: {msg}"
        );
    }
}

#[test]
fn the_timeline_renders_in_a_browser_with_its_charts_and_the_violation() {
    let Some(chrome) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: chromium is required (Debian's `chromium` package)"
        );
        eprintln!("SKIPPED: no chromium here (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let loaded = load("power-loss.toml");
    let out = run(&loaded, 1);
    let page = dir.path().join("timeline.html");
    std::fs::write(&page, timeline::html(&out.timeline, &out.report)).unwrap();
    assert!(
        !std::fs::read_to_string(&page).unwrap().contains("http"),
        "self-contained: no fetches"
    );
    let url = format!("file://{}", page.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    let dom = std::process::Command::new(chrome)
        .args(common)
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for want in [
        "First violation: no-acknowledged-event-lost",
        "id=\"membership\"",
        "id=\"faults\"",
        "id=\"placement\"",
        "id=\"events\"",
        "id=\"latency\"",
        "class=\"violation\"",
        "class=\"partition\"",
        "pipeline: outside → ingest (raw.batch)",
        "power losses",
    ] {
        assert!(dom.contains(want), "the rendered page lacks {want}");
    }
    assert!(dom.matches("<polyline").count() >= 5);
    let shot = dir.path().join("timeline.png");
    let status = std::process::Command::new(chrome)
        .args(common)
        .args([
            "--window-size=1100,1600",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("OMEGA_TIMELINE_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
