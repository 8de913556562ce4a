//! The `herald` binary's command line, as an operator uses it.

use std::process::Command;

fn herald(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("WORLD_SERVER_USERNAME")
        .output()
        .expect("run herald")
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/component.toml.example");
    let out = herald(&["check-config", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}

#[test]
fn check_config_lists_every_problem_with_its_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("component.toml");
    std::fs::write(
        &path,
        "[component]\njid = \"a@b\"\nsecret = \"x\"\n[presence]\nchnages = \"all\"\n[[sinks.xmpp]]\n",
    )
    .unwrap();
    let out = herald(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["component.jid", "presence.chnages", "sinks.xmpp[0].domain"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}

#[test]
fn a_broken_config_never_starts_the_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("component.toml");
    std::fs::write(&path, "[component]\njid = \"herald.localhost\"\n").unwrap();
    let out = herald(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret"), "{err}");
    assert!(!err.contains("herald started"), "{err}");
}

#[test]
fn a_missing_config_file_is_reported() {
    let out = herald(&["check-config", "--config", "/nonexistent/herald.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/herald.toml"));
}
