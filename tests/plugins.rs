//! The registry as users see it: built-in plugins listed with their origin,
//! the example runtime plugin loaded, registered and used in a run, and
//! libraries with a missing or mismatched declaration refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{arg, build_sds_plugin, difi_err, difi_ok, latest_snapshot, scratch};

#[test]
fn builtin_plugins_are_listed_with_role_and_origin() {
    let listing = difi_ok(&["plugins"]);
    for (role, name, origin) in [
        ("score-model", "gmm", "difi-zoo"),
        ("score-model", "mlp-denoiser", "difi-zoo"),
        ("generator", "mlp-generator", "difi-zoo"),
        ("generator", "stylegan2", "difi-zoo"),
        ("divergence", "ikl", "difi-divergences"),
        ("score-model", "edm", "difi-zoo"),
        ("dataset", "zip", "difi-datasets"),
        ("dataset", "folder", "difi-datasets"),
    ] {
        let found = listing.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields == [role, name, origin]
        });
        assert!(found, "`{role} {name} {origin}` missing from:\n{listing}");
    }
}

#[test]
fn example_plugin_loads_registers_and_trains() {
    let library = build_sds_plugin();
    let listing = difi_ok(&["plugins", "--plugin", arg(&library)]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("divergence") && l.contains(" sds ") && l.contains("libdifi_plugin_sds.so")),
        "{listing}"
    );

    let dir = scratch("plugin-run");
    let run = dir.join("run");
    difi_ok(&[
        "distill",
        "configs/toy-gmm.ron",
        "--outdir",
        arg(&run),
        "--plugin",
        arg(&library),
        "--set",
        r#"divergence=(plugin: "sds", params: (p_mean: 0.0))"#,
        "--set",
        "schedule.total_kimg=20",
        "--set",
        "schedule.tick_kimg=5",
        "--set",
        "fake_warmup_iters=10",
    ]);
    // The run recorded the library and the plugin's resolved params.
    let config = std::fs::read_to_string(run.join("config.ron")).unwrap();
    assert!(config.contains("libdifi_plugin_sds.so") && config.contains("plugin: \"sds\""), "{config}");
    assert!(config.contains("p_std: 1.2"), "defaults of the plugin's params are filled in:\n{config}");
    // Its loss drove the generator: finite, and the generator moved.
    let stats = std::fs::read_to_string(run.join("stats.jsonl")).unwrap();
    for line in stats.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value["loss_generator"].as_f64().is_some_and(f64::is_finite), "{line}");
    }
    assert!(latest_snapshot(&run).join("generator.safetensors").is_file());
    // Sampling reloads the library from the recorded config.
    let out = dir.join("samples.npy");
    difi_ok(&["sample", "--run", arg(&run), "--n", "50", "--out", arg(&out)]);

    // Unknown params of a runtime plugin are refused by the plugin, with the name.
    let err = difi_err(&[
        "check",
        "configs/toy-gmm.ron",
        "--plugin",
        arg(&library),
        "--set",
        r#"divergence=(plugin: "sds", params: (p_maen: 0.0))"#,
    ]);
    assert!(err.contains("divergence.params") && err.contains("p_maen"), "{err}");
}

/// Builds a C shared library exporting `difi_plugin_declaration` with the
/// given magic, ABI version and difi-core version.
fn c_plugin(dir: &Path, name: &str, magic: &str, abi: u32, difi_core: &str) -> PathBuf {
    let info = difi_ok(&["info"]);
    let version = |key: &str| -> String {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} in {info}"))
            .to_string()
    };
    let libtorch = version("libtorch");
    let source = format!(
        r#"
struct declaration {{
    unsigned char magic[8];
    unsigned int abi_version;
    const char *difi_core_version, *tch_version, *libtorch_version, *rustc_version, *plugin_name;
    const void *divergences;
    unsigned long divergence_count;
}};
__attribute__((visibility("default")))
const struct declaration difi_plugin_declaration = {{
    {{ {magic} }}, {abi}, "{difi_core}", "0.24.0", "{libtorch}", "rustc", "{name}", 0, 0
}};
"#,
        magic = magic.bytes().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
    );
    let c_file = dir.join(format!("{name}.c"));
    std::fs::write(&c_file, source).unwrap();
    let library = dir.join(format!("lib{name}.so"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o", arg(&library), arg(&c_file)])
        .status()
        .expect("a C compiler (cc) builds the mismatched test plugins");
    assert!(status.success());
    library
}

#[test]
fn mismatched_or_missing_declarations_are_refused() {
    let dir = scratch("plugin-refusals");
    let core_version = env!("CARGO_PKG_VERSION");

    let matching = c_plugin(&dir, "empty", "DIFIPLUG", 1, core_version);
    let listing = difi_ok(&["plugins", "--plugin", arg(&matching)]);
    assert!(listing.contains("gmm"), "a matching declaration with nothing in it loads:\n{listing}");

    let other_core = c_plugin(&dir, "othercore", "DIFIPLUG", 1, "0.0.1-other");
    let err = difi_err(&["plugins", "--plugin", arg(&other_core)]);
    assert!(err.contains("difi-core 0.0.1-other") && err.contains("rebuild"), "{err}");

    let other_abi = c_plugin(&dir, "otherabi", "DIFIPLUG", 7, core_version);
    let err = difi_err(&["plugins", "--plugin", arg(&other_abi)]);
    assert!(err.contains("ABI version 7"), "{err}");

    let bad_magic = c_plugin(&dir, "badmagic", "NOTDIFI!", 1, core_version);
    let err = difi_err(&["plugins", "--plugin", arg(&bad_magic)]);
    assert!(err.contains("bad magic"), "{err}");

    let c_file = dir.join("plain.c");
    std::fs::write(&c_file, "int something(void) { return 1; }\n").unwrap();
    let plain = dir.join("libplain.so");
    assert!(Command::new("cc").args(["-shared", "-fPIC", "-o", arg(&plain), arg(&c_file)]).status().unwrap().success());
    let err = difi_err(&["plugins", "--plugin", arg(&plain)]);
    assert!(err.contains("not a difi plugin") && err.contains("difi_plugin_declaration"), "{err}");

    let not_a_library = dir.join("notes.txt");
    std::fs::write(&not_a_library, "hello").unwrap();
    let err = difi_err(&["plugins", "--plugin", arg(&not_a_library)]);
    assert!(err.contains("notes.txt") && err.contains("no ELF header"), "{err}");

    let err = difi_err(&["plugins", "--plugin", "no/such/lib.so"]);
    assert!(err.contains("no/such/lib.so") && err.contains("no such file"), "{err}");
    let err = difi_err(&["plugins", "--plugin", arg(&dir)]);
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn broken_libraries_are_refused_before_loading_with_the_loader_s_reason() {
    let dir = scratch("plugin-broken");
    let source = dir.join("needs.c");
    std::fs::write(
        &source,
        "extern int difi_test_missing_value;\nint read_it(void) { return difi_test_missing_value; }\n",
    )
    .unwrap();
    let library = dir.join("libneeds.so");
    assert!(
        Command::new("cc").args(["-shared", "-fPIC", "-o", arg(&library), arg(&source)]).status().unwrap().success()
    );
    let err = difi_err(&["plugins", "--plugin", arg(&library)]);
    assert!(err.contains("cannot load") && err.contains("difi_test_missing_value"), "dlopen's reason: {err}");

    // A truncated library would fault (SIGBUS) inside dlopen; it must be an error instead.
    let bytes = std::fs::read(&library).unwrap();
    let truncated = dir.join("libtruncated.so");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = common::difi_refuses(&["plugins", "--plugin", arg(&truncated)]);
    assert!(err.contains("libtruncated.so") && err.contains("truncated"), "{err}");
}

#[test]
fn a_plugin_named_twice_is_an_error() {
    let library = build_sds_plugin();
    let err = difi_err(&["plugins", "--plugin", arg(&library), "--plugin", arg(&library)]);
    assert!(err.contains("`sds` is registered twice"), "{err}");
}

#[test]
fn every_builtin_plugin_resolves_its_defaults_stably() {
    difi_zoo::link();
    difi_divergences::link();
    difi_datasets::link();
    let registry = difi_core::registry::Registry::with_builtins().unwrap();
    let ctx = difi_core::registry::ResolveContext { base_dir: std::path::Path::new(".") };
    // Plugins whose params have no sensible default name what is required.
    let required = [("zip", "path"), ("folder", "path")];
    let mut count = 0;
    for entry in registry.entries() {
        let defaults = match (entry.resolve)(&serde_json::Value::Null, &ctx) {
            Ok(defaults) => defaults,
            Err(err) => {
                let (_, field) = required
                    .iter()
                    .find(|(name, _)| *name == entry.name)
                    .unwrap_or_else(|| panic!("{}: {err}", entry.name));
                assert!(err.to_string().contains(field), "{}: {err}", entry.name);
                (entry.resolve)(&serde_json::json!({ *field: "somewhere" }), &ctx).unwrap()
            }
        };
        let again = (entry.resolve)(&defaults, &ctx).unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        assert_eq!(defaults, again, "{} does not round-trip its resolved params", entry.name);
        assert!(defaults.is_object(), "{}: params are a struct", entry.name);
        let mut unknown = defaults.clone();
        unknown.as_object_mut().unwrap().insert("no_such_field".into(), 1.into());
        let err =
            (entry.resolve)(&unknown, &ctx).err().unwrap_or_else(|| panic!("{} accepts unknown fields", entry.name));
        assert!(err.to_string().contains("no_such_field"), "{err}");
        count += 1;
    }
    assert!(count >= 7, "{count} plugins");
}
