//! Helpers shared by the end-to-end tests: running the `difi` binary and
//! making scratch directories.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh, empty scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difi-tests").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clean scratch dir");
    }
    std::fs::create_dir_all(&dir).expect("make scratch dir");
    dir
}

/// `difi ARGS…`, run from the workspace root with warnings-only logs. Tests
/// run several small trainings at once on few cores, so each gets one
/// libtorch thread (threads that spin-wait on a shared core slow everything).
pub fn difi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_difi"))
        .current_dir(root())
        .env("OMP_NUM_THREADS", "1")
        .args(["--log", "warn"])
        .args(args)
        .output()
        .expect("run difi")
}

/// Starts `difi ARGS…` as [`difi`] runs it, stderr captured, for tests that
/// signal it while it trains.
pub fn spawn_difi(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_difi"))
        .current_dir(root())
        .env("OMP_NUM_THREADS", "1")
        .args(["--log", "warn"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start difi")
}

/// Runs `difi ARGS…` and panics with its output unless it succeeds.
pub fn difi_ok(args: &[&str]) -> String {
    let out = difi(args);
    assert!(
        out.status.success(),
        "difi {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `difi ARGS…`, expects failure, and returns stderr.
pub fn difi_err(args: &[&str]) -> String {
    let out = difi(args);
    assert!(!out.status.success(), "difi {args:?} should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A path as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The newest snapshot directory of a run.
pub fn latest_snapshot(run: &Path) -> PathBuf {
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(run.join("snapshots"))
        .expect("snapshots dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("snapshot-")))
        .collect();
    snapshots.sort();
    snapshots.pop().expect("a snapshot")
}

/// Builds the example runtime plugin and returns the path of its library.
pub fn build_sds_plugin() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--quiet", "-p", "difi-plugin-sds"])
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the example plugin failed");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
    let lib = target.join("debug").join("libdifi_plugin_sds.so");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

/// Runs `difi ARGS…` with environment changes (`None` removes a variable),
/// expects failure, and returns stderr.
pub fn difi_err_env(args: &[&str], env: &[(&str, Option<&str>)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_difi"));
    command.current_dir(root()).env("OMP_NUM_THREADS", "1").args(["--log", "warn"]).args(args);
    for (key, value) in env {
        match value {
            Some(v) => command.env(key, v),
            None => command.env_remove(key),
        };
    }
    let out = command.output().expect("run difi");
    assert!(!out.status.success(), "difi {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `difi ARGS…` as [`difi`] runs it, but under a 4 GB address-space limit
/// and a 120-second time limit, so a hostile input that asks for unbounded
/// memory or time fails the test instead of the machine.
pub fn difi_bounded(args: &[&str]) -> Output {
    Command::new("bash")
        .current_dir(root())
        .env("OMP_NUM_THREADS", "1")
        .args(["-c", r#"ulimit -v 4000000; exec timeout 120 "$@""#, "_", env!("CARGO_BIN_EXE_difi"), "--log", "warn"])
        .args(args)
        .output()
        .expect("run difi")
}

/// Runs `difi ARGS…` bounded as [`difi_bounded`], expects it to refuse
/// with exit status 1 and a one-line error (no panic), and returns stderr.
pub fn difi_refuses(args: &[&str]) -> String {
    let out = difi_bounded(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "difi {args:?} should exit 1 ({}):\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "difi {args:?} panicked:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "difi {args:?}: one error line expected:\n{stderr}");
    stderr
}

/// Writes `config` (RON) as `DIR/distill.ron`, distills it into `DIR/run`
/// (a two-tick run), checks that every tick's generator loss is finite, and
/// returns the run directory with its `stats.jsonl` lines.
pub fn distill_two_ticks(dir: &Path, config: &str) -> (PathBuf, Vec<serde_json::Value>) {
    let path = dir.join("distill.ron");
    std::fs::write(&path, config).expect("write config");
    let run = dir.join("run");
    difi_ok(&["distill", arg(&path), "--outdir", arg(&run)]);
    let stats = std::fs::read_to_string(run.join("stats.jsonl")).expect("stats");
    assert_eq!(stats.lines().count(), 2, "{stats}");
    let lines: Vec<serde_json::Value> = stats.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    for line in &lines {
        assert!(line["loss_generator"].as_f64().is_some_and(f64::is_finite), "{line}");
    }
    (run, lines)
}
