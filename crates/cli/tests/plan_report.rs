//! The HTML report renders in a real browser: headless Chromium takes a screenshot and dumps the
//! DOM, which must hold both plots. Without Chromium the test skips with a note locally and fails
//! under CI (env `CI` set); Debian's package is `chromium`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs a command with a deadline (a browser that hangs must fail the test, not stall it).
fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the command starts");
    let start = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if start.elapsed() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!("{cmd:?} took longer than {deadline:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn chromium_args(profile_dir: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile_dir.display())])
    .collect()
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let Some(chromium) = find_chromium() else {
        tessera_testkit::missing_prerequisite("chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plan-report");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let html = dir.join("report.html");
    let mut args: Vec<String> = [
        "plan",
        "report",
        "-o",
        html.to_str().unwrap(),
        "--model",
        "llama-3.1-8b",
        "--rules",
        "us-2023-10",
        "--region",
        "CN",
        "--rate",
        "5",
        "--slo-ttft",
        "2000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/fixtures/profiles");
    if let Ok(entries) = std::fs::read_dir(&fixtures) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            args.push("--profile".into());
            args.push(f.display().to_string());
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tessera")).args(&args).output().expect("tessera starts");
    assert!(out.status.success(), "plan report failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&html).expect("the report was written");
    assert!(!text.contains("<script"), "the report needs no script");
    assert!(!text.contains("src=\"http") && !text.contains("<link"), "the report loads nothing from the network");

    let url = format!("file://{}", html.display());
    let png = dir.join("report.png");
    let shot = run_with_deadline(
        Command::new(&chromium)
            .args(chromium_args(&dir.join("profile-shot")))
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1280,2000")
            .arg(&url),
        Duration::from_secs(120),
    );
    assert!(shot.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).expect("a screenshot was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
    assert!(bytes.len() > 20_000, "the screenshot is not blank ({} bytes)", bytes.len());
    eprintln!("screenshot: {} ({} bytes)", png.display(), bytes.len());

    let dom = run_with_deadline(
        Command::new(&chromium).args(chromium_args(&dir.join("profile-dom"))).arg("--dump-dom").arg(&url),
        Duration::from_secs(120),
    );
    assert!(dom.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"classification-map\""), "the classification map is in the rendered DOM");
    assert!(dom.contains("id=\"cost-vs-throughput\""), "the cost plot is in the rendered DOM");
    assert!(dom.matches("<svg").count() >= 2);
    assert!(dom.contains("class=\"threshold\""), "the rule thresholds are drawn");
    assert!(dom.contains("Fleet plan"), "the fleet section is there");
}
