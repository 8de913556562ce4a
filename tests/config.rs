//! `component.toml`: the example file, the layers (file ← environment) and the problems an
//! operator sees.
//!
//! Every test runs inside [`with_env`], which serialises access to the process environment and
//! starts from an environment without `HERALD_…` or `WORLD_SERVER_USERNAME` variables, so the
//! developer's shell cannot change the outcome.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use herald::config::{
    load, load_str, Changes, ComponentConfig, ConfigErrors, ConfigProblem, PresenceConfig,
    PresenceSource, Secret, Settings, StoreConfig, WebhookSinkConfig,
};

const MINIMAL: &str = "[component]\njid = \"herald.example.org\"\nsecret = \"s3cr3t\"\n";

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Restores the variables [`with_env`] removed or set, even when the test panics.
struct EnvRestore {
    saved: Vec<(String, String)>,
    set: Vec<String>,
}

impl Drop for EnvRestore {
    fn drop(&mut self) {
        for key in &self.set {
            std::env::remove_var(key);
        }
        for (key, value) in &self.saved {
            std::env::set_var(key, value);
        }
    }
}

/// Runs `test` with exactly `vars` as the configuration-relevant environment.
fn with_env<T>(vars: &[(&str, &str)], test: impl FnOnce() -> T) -> T {
    let _lock = ENV_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let relevant = |key: &str| {
        key.to_ascii_uppercase().starts_with("HERALD_") || key == "WORLD_SERVER_USERNAME"
    };
    let saved: Vec<(String, String)> = std::env::vars().filter(|(k, _)| relevant(k)).collect();
    let _restore = EnvRestore {
        saved: saved.clone(),
        set: vars.iter().map(|(k, _)| k.to_string()).collect(),
    };
    for (key, _) in &saved {
        std::env::remove_var(key);
    }
    for (key, value) in vars {
        std::env::set_var(key, value);
    }
    test()
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("component.toml.example")
}

fn ok(result: Result<Settings, ConfigErrors>) -> Settings {
    result.unwrap_or_else(|errors| panic!("unexpected problems:\n{errors}"))
}

fn problems(result: Result<Settings, ConfigErrors>) -> ConfigErrors {
    match result {
        Ok(settings) => panic!("expected problems, got {settings:?}"),
        Err(errors) => errors,
    }
}

/// `load_str` in an environment without configuration variables.
fn parse(toml: &str) -> Result<Settings, ConfigErrors> {
    with_env(&[], || load_str(toml))
}

fn rejected(toml: &str) -> ConfigErrors {
    problems(parse(toml))
}

fn keys(errors: &ConfigErrors) -> Vec<&str> {
    errors.0.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn example_file_loads_with_the_default_values() {
    let settings = with_env(&[], || ok(load(&example_path())));
    let component = ComponentConfig::default();
    let store = StoreConfig::default();
    let presence = PresenceConfig::default();

    assert_eq!(settings.component.jid.as_str(), "herald.example.org");
    assert_eq!(settings.component.secret.expose(), "change-me");
    assert_eq!(settings.component.server, component.server);
    assert_eq!(settings.component.keepalive, component.keepalive);
    assert_eq!(settings.component.read_timeout, component.read_timeout);
    assert_eq!(
        settings.component.request_timeout,
        component.request_timeout
    );
    assert_eq!(settings.component.reconnect_min, component.reconnect_min);
    assert_eq!(settings.component.reconnect_max, component.reconnect_max);
    assert_eq!(settings.component.stable_after, component.stable_after);
    assert_eq!(settings.store.path, store.path);
    assert_eq!(settings.store.flush_interval, store.flush_interval);
    assert_eq!(settings.store.cache_bytes, store.cache_bytes);
    assert_eq!(settings.presence.source, presence.source);
    assert_eq!(settings.presence.changes, presence.changes);
    assert_eq!(
        settings.presence.snapshot_timeout,
        presence.snapshot_timeout
    );
    assert_eq!(settings.xmpp_sinks.len(), 1);
    assert_eq!(settings.xmpp_sinks[0].to.as_str(), "world@example.org");
    assert_eq!(settings.webhook_sinks.len(), 1);
    let webhook = &settings.webhook_sinks[0];
    let defaults = WebhookSinkConfig::default();
    assert_eq!(
        webhook.url.as_str(),
        "https://game.example.org/hooks/presence"
    );
    assert_eq!(webhook.name, "game.example.org/hooks/presence");
    assert_eq!(
        webhook.secret.as_ref().map(Secret::expose),
        Some("change-me-too")
    );
    assert_eq!(webhook.headers.len(), 1);
    assert_eq!(webhook.timeout, defaults.timeout);
    assert_eq!(webhook.batch_max, defaults.batch_max);
    assert_eq!(webhook.batch_delay, defaults.batch_delay);
    assert_eq!(webhook.max_backlog, defaults.max_backlog);
    assert_eq!(webhook.retry_min, defaults.retry_min);
    assert_eq!(webhook.retry_max, defaults.retry_max);
    assert!(settings.admin.jids.is_empty());
}

/// The schema names its own keys: an unknown key's problem lists the expected ones, and each of
/// them must appear (possibly commented out) in the example.
#[test]
fn example_file_documents_every_key() {
    let example = std::fs::read_to_string(example_path()).expect("component.toml.example");
    let documented = |section: &str, key: &str| {
        let mut in_section = false;
        example.lines().any(|line| {
            let line = line.trim();
            if line.starts_with('[') {
                in_section = line.trim_matches(|c| c == '[' || c == ']') == section;
            }
            in_section
                && line
                    .trim_start_matches("# ")
                    .starts_with(&format!("{key} ="))
        })
    };
    for (section, header) in [
        ("component", ""), // MINIMAL ends inside [component]
        ("store", "[store]"),
        ("presence", "[presence]"),
        ("sinks.xmpp", "[[sinks.xmpp]]\ndomain = \"example.org\""),
        (
            "sinks.webhook",
            "[[sinks.webhook]]\nurl = \"https://h.example.org/\"",
        ),
        ("admin", "[admin]"),
        ("http", "[http]"),
        ("push", "[push]"),
        ("muc", "[muc]"),
    ] {
        let toml = format!("{MINIMAL}{header}\nnot_a_key = 1\n");
        let errors = with_env(&[], || problems(load_str(&toml)));
        let message = &errors.0[0].message;
        let expected = message
            .strip_prefix("unknown key (expected one of: ")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        for key in expected.split(", ") {
            assert!(
                documented(section, key),
                "{section}.{key} missing from the example"
            );
        }
    }
}

#[test]
fn minimal_config_gets_all_defaults() {
    let settings = with_env(&[], || ok(load_str(MINIMAL)));
    let c = &settings.component;
    assert_eq!(c.jid.as_str(), "herald.example.org");
    assert_eq!(c.secret.expose(), "s3cr3t");
    assert_eq!(c.server, "127.0.0.1:5347");
    assert_eq!(c.keepalive, Duration::from_secs(20));
    assert_eq!(c.read_timeout, Duration::from_secs(60));
    assert_eq!(c.request_timeout, Duration::from_secs(15));
    assert_eq!(c.reconnect_min, Duration::from_secs(1));
    assert_eq!(c.reconnect_max, Duration::from_secs(60));
    assert_eq!(c.stable_after, Duration::from_secs(60));
    assert_eq!(settings.store.path, PathBuf::from("/var/lib/herald"));
    assert_eq!(settings.store.flush_interval, Duration::from_millis(100));
    assert_eq!(settings.store.cache_bytes, 16 * 1024 * 1024);
    assert_eq!(settings.presence.source, PresenceSource::Privilege);
    assert_eq!(settings.presence.changes, Changes::Availability);
    assert_eq!(settings.presence.snapshot_timeout, Duration::from_secs(30));
    assert!(settings.xmpp_sinks.is_empty());
    assert!(settings.webhook_sinks.is_empty());
    assert!(settings.admin.jids.is_empty());
}

#[test]
fn durations_accept_humantime_strings() {
    let toml = format!("{MINIMAL}keepalive = \"1m 30s\"\nread_timeout = \"5m\"\n");
    let settings = with_env(&[], || ok(load_str(&toml)));
    assert_eq!(settings.component.keepalive, Duration::from_secs(90));
    assert_eq!(settings.component.read_timeout, Duration::from_secs(300));
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let errors = with_env(&[], || {
        problems(load_str(&format!("verbose = true\n{MINIMAL}")))
    });
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "verbose",
            "unknown key (expected one of: component, store, presence, sinks, admin, http, push, muc)"
        )]
    );

    let toml = format!("{MINIMAL}[presence]\nchnages = \"all\"\n");
    let errors = with_env(&[], || problems(load_str(&toml)));
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "presence.chnages",
            "unknown key (expected one of: source, changes, snapshot_timeout, snapshot, max_status_bytes, liveness, liveness_interval, ejabberd_api)"
        )]
    );
}

#[test]
fn bad_duration_is_reported_at_its_key() {
    let toml = format!("{MINIMAL}keepalive = \"3 parsecs\"\n");
    let errors = with_env(&[], || problems(load_str(&toml)));
    assert_eq!(keys(&errors), ["component.keepalive"], "{errors}");
    assert!(errors.0[0].message.contains("\"3 parsecs\""), "{errors}");
    assert!(errors.0[0].message.contains("duration"), "{errors}");
}

#[test]
fn wrong_enum_value_lists_the_allowed_ones() {
    let toml = format!("{MINIMAL}[presence]\nchanges = \"some\"\n");
    let errors = with_env(&[], || problems(load_str(&toml)));
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "presence.changes",
            "unknown value \"some\" (expected one of: availability, all)"
        )]
    );
}

#[test]
fn exactly_one_of_secret_and_secret_file() {
    let both = "[component]\njid = \"h.example.org\"\nsecret = \"s\"\nsecret_file = \"/x\"\n";
    let neither = "[component]\njid = \"h.example.org\"\n";
    for toml in [both, neither] {
        let errors = with_env(&[], || problems(load_str(toml)));
        assert_eq!(
            errors.0,
            vec![ConfigProblem::new(
                "component",
                "set exactly one of secret or secret_file"
            )],
            "{toml}"
        );
    }
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, "  s3cr3t value \n\n").expect("write secret");
    let toml = format!("[component]\njid = \"h.example.org\"\nsecret_file = {path:?}\n");
    let settings = with_env(&[], || ok(load_str(&toml)));
    assert_eq!(settings.component.secret.expose(), "  s3cr3t value");
}

#[test]
fn missing_or_empty_secret_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let toml = format!("[component]\njid = \"h.example.org\"\nsecret_file = {missing:?}\n");
    let errors = with_env(&[], || problems(load_str(&toml)));
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "component.secret_file",
            format!(
                "cannot read {}: No such file or directory",
                missing.display()
            )
        )]
    );

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write secret");
    let toml = format!("[component]\njid = \"h.example.org\"\nsecret_file = {empty:?}\n");
    let errors = with_env(&[], || problems(load_str(&toml)));
    assert_eq!(keys(&errors), ["component.secret_file"], "{errors}");
    assert!(errors.0[0].message.ends_with("is empty"), "{errors}");
}

#[test]
fn environment_wins_over_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("component.toml");
    let toml = format!(
        "{MINIMAL}server = \"file.example:5347\"\n[presence]\nchanges = \"availability\"\n"
    );
    std::fs::write(&path, toml).expect("write config");
    let env = [
        ("HERALD_COMPONENT__SERVER", "env.example:5275"),
        ("HERALD_PRESENCE__CHANGES", "all"),
    ];
    let settings = with_env(&env, || ok(load(&path)));
    assert_eq!(settings.component.server, "env.example:5275");
    assert_eq!(settings.presence.changes, Changes::All);
    assert_eq!(
        settings.component.secret.expose(),
        "s3cr3t",
        "file values stay"
    );
}

#[test]
fn environment_alone_can_supply_required_keys() {
    let env = [
        ("HERALD_COMPONENT__JID", "herald.example.org"),
        ("HERALD_COMPONENT__SECRET", "0123"),
        ("HERALD_ADMIN__JIDS", "[\"admin@example.org\"]"),
        ("HERALD_STORE__CACHE_BYTES", "2097152"),
        ("HERALD_COMPONENT__KEEPALIVE", "10s"),
    ];
    let settings = with_env(&env, || ok(load_str("")));
    assert_eq!(settings.component.jid.as_str(), "herald.example.org");
    assert_eq!(
        settings.component.secret.expose(),
        "0123",
        "secrets are verbatim"
    );
    assert_eq!(settings.admin.jids[0].as_str(), "admin@example.org");
    assert_eq!(settings.store.cache_bytes, 2 * 1024 * 1024);
    assert_eq!(settings.component.keepalive, Duration::from_secs(10));
}

#[test]
fn bad_environment_values_name_their_variable() {
    let env = [
        ("HERALD_PRESENCE__CHANGES", "some"),
        ("HERALD_COMPONENT__SECERT", "x"),
    ];
    let errors = with_env(&env, || problems(load_str(MINIMAL)));
    assert_eq!(
        keys(&errors),
        ["component.secert", "presence.changes"],
        "{errors}"
    );
    assert!(
        errors.0[0]
            .message
            .ends_with("(from HERALD_COMPONENT__SECERT)"),
        "{errors}"
    );
    assert!(
        errors.0[1]
            .message
            .ends_with("(from HERALD_PRESENCE__CHANGES)"),
        "{errors}"
    );
}

#[test]
fn herald_variables_without_a_section_are_not_configuration() {
    let env = [
        ("HERALD_CONFIG", "/etc/herald.toml"),
        ("HERALD_LOG", "debug"),
    ];
    assert!(with_env(&env, || load_str(MINIMAL)).is_ok());
}

#[test]
fn server_user_comes_from_config_then_world_server_username_then_default() {
    let sink = |toml: &str, env: &[(&str, &str)]| {
        let settings = with_env(env, || ok(load_str(&format!("{MINIMAL}{toml}"))));
        (
            settings.xmpp_sinks[0].server_user.clone(),
            settings.xmpp_sinks[0].to.to_string(),
        )
    };
    let configured = "[[sinks.xmpp]]\ndomain = \"example.org\"\nserver_user = \"world\"\n";
    let unset = "[[sinks.xmpp]]\ndomain = \"example.org\"\n";
    let world = [("WORLD_SERVER_USERNAME", "game")];
    assert_eq!(
        sink(configured, &world),
        ("world".into(), "world@example.org".into())
    );
    assert_eq!(
        sink(unset, &world),
        ("game".into(), "game@example.org".into())
    );
    assert_eq!(
        sink(unset, &[]),
        ("server".into(), "server@example.org".into())
    );
}

#[test]
fn several_problems_are_reported_at_once() {
    let toml = "[component]\njid = \"herald@example.org\"\nkeepalive = \"40s\"\n\
                server = \"localhost\"\n\
                [presence]\nchnages = \"all\"\n\
                [[sinks.xmpp]]\ndomain = \"example.org\"\n[[sinks.xmpp]]\ndomain = \"a/b\"\n\
                [admin]\njids = [\"admin@example.org/phone\"]\n";
    let errors = with_env(&[], || problems(load_str(toml)));
    assert_eq!(
        keys(&errors),
        [
            "presence.chnages",
            "component.jid",
            "component",
            "component.server",
            "component.keepalive",
            "sinks.xmpp[1].domain",
            "admin.jids[0]",
        ],
        "{errors}"
    );
    assert_eq!(
        errors.for_key("component.jid").map(|p| p.message.as_str()),
        Some("\"herald@example.org\" is not a bare domain (no '@' or '/')")
    );
    assert_eq!(
        errors
            .for_key("component.keepalive")
            .map(|p| p.message.as_str()),
        Some("must be less than half of read_timeout (1m)")
    );
    let display = errors.to_string();
    assert_eq!(display.lines().count(), errors.0.len());
    assert!(
        display
            .lines()
            .any(|l| l.starts_with("sinks.xmpp[1].domain: ")),
        "{display}"
    );
}

#[test]
fn durations_are_bounded() {
    let errors = rejected(&format!(
        "{MINIMAL}keepalive = \"30s\"\nreconnect_min = \"2m\"\nrequest_timeout = \"0s\"\n\
         [store]\nflush_interval = \"11s\"\n[presence]\nsnapshot_timeout = \"0s\"\n"
    ));
    let message = |key: &str| errors.for_key(key).map(|p| p.message.as_str());
    assert_eq!(
        message("component.keepalive"),
        Some("must be less than half of read_timeout (1m)")
    );
    assert_eq!(
        message("component.reconnect_max"),
        Some("must be at least reconnect_min (2m)")
    );
    assert_eq!(
        message("component.request_timeout"),
        Some("must be greater than 0")
    );
    assert_eq!(message("store.flush_interval"), Some("must be at most 10s"));
    assert_eq!(
        message("presence.snapshot_timeout"),
        Some("must be greater than 0")
    );
    assert_eq!(errors.0.len(), 5, "{errors}");
}

/// Every duration key has an upper bound, reported at the key with the bound.
#[test]
fn too_large_durations_are_reported_at_their_key() {
    let errors = rejected(&format!(
        "{MINIMAL}keepalive = \"31m\"\nread_timeout = \"61m\"\nrequest_timeout = \"2h\"\n\
         reconnect_min = \"1h 1s\"\nreconnect_max = \"100years\"\nstable_after = \"25h\"\n\
         [presence]\nsnapshot_timeout = \"3h\"\n"
    ));
    let message = |key: &str| errors.for_key(key).map(|p| p.message.as_str());
    for key in [
        "component.read_timeout",
        "component.request_timeout",
        "component.reconnect_min",
        "component.reconnect_max",
        "presence.snapshot_timeout",
    ] {
        assert_eq!(message(key), Some("must be at most 1h"), "{key}: {errors}");
    }
    assert_eq!(message("component.keepalive"), Some("must be at most 30m"));
    assert_eq!(
        message("component.stable_after"),
        Some("must be at most 24h")
    );
    assert_eq!(errors.0.len(), 7, "one problem per key: {errors}");

    // The bounds themselves are accepted.
    let settings = ok(parse(&format!(
        "{MINIMAL}keepalive = \"29m\"\nread_timeout = \"1h\"\nrequest_timeout = \"1h\"\n\
         reconnect_min = \"1h\"\nreconnect_max = \"1h\"\nstable_after = \"24h\"\n\
         [presence]\nsnapshot_timeout = \"1h\"\n"
    )));
    assert_eq!(settings.component.reconnect_max, Duration::from_secs(3600));
    assert_eq!(settings.component.stable_after, Duration::from_secs(86400));
}

#[test]
fn too_large_webhook_durations_are_reported_at_their_key() {
    let errors = rejected(&with_webhook(&format!(
        "{HOOK_URL}timeout = \"2h\"\nbatch_delay = \"90m\"\nretry_min = \"1h 1ms\"\n\
         retry_max = \"18446744073709551615s\"\n"
    )));
    for key in ["timeout", "batch_delay", "retry_min", "retry_max"] {
        let key = format!("sinks.webhook[0].{key}");
        assert_eq!(
            errors.for_key(&key).map(|p| p.message.as_str()),
            Some("must be at most 1h"),
            "{key}: {errors}"
        );
    }
    assert_eq!(errors.0.len(), 4, "{errors}");
    let settings = ok(parse(&with_webhook(&format!(
        "{HOOK_URL}timeout = \"1h\"\nbatch_delay = \"1h\"\nretry_min = \"1h\"\nretry_max = \"1h\"\n"
    ))));
    assert_eq!(
        settings.webhook_sinks[0].retry_max,
        Duration::from_secs(3600)
    );
}

#[test]
fn keepalive_just_under_half_of_read_timeout_is_accepted() {
    let settings = parse(&format!(
        "{MINIMAL}keepalive = \"29s\"\nread_timeout = \"1m\"\n"
    ));
    assert!(settings.is_ok(), "{settings:?}");
    assert!(parse(&format!(
        "{MINIMAL}keepalive = \"30s\"\nread_timeout = \"1m\"\n"
    ))
    .is_err());
}

#[test]
fn cache_must_hold_at_least_one_mebibyte() {
    assert!(parse(&format!("{MINIMAL}[store]\ncache_bytes = 1048576\n")).is_ok());
    let errors = rejected(&format!("{MINIMAL}[store]\ncache_bytes = 1048575\n"));
    assert!(errors.for_key("store.cache_bytes").is_some(), "{errors}");
    let errors = rejected(&format!("{MINIMAL}[store]\ncache_bytes = -1\n"));
    assert!(errors.for_key("store.cache_bytes").is_some(), "{errors}");
}

#[test]
fn component_jid_must_be_a_domain() {
    for (jid, expected) in [
        (
            "herald@example.org",
            "\"herald@example.org\" is not a bare domain (no '@' or '/')",
        ),
        (
            "example.org/res",
            "\"example.org/res\" is not a bare domain (no '@' or '/')",
        ),
        ("", "must not be empty"),
    ] {
        let errors = rejected(&format!("[component]\njid = {jid:?}\nsecret = \"s\"\n"));
        assert_eq!(
            errors.0,
            vec![ConfigProblem::new("component.jid", expected)]
        );
    }
    let errors = rejected("[component]\nsecret = \"s\"\n");
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "component.jid",
            "required key is missing"
        )]
    );
}

#[test]
fn sink_problems_name_the_entry() {
    let errors = rejected(&format!(
        "{MINIMAL}[[sinks.xmpp]]\ndomain = \"example.org\"\n\
         [[sinks.xmpp]]\ndomain = \"a@b\"\n\
         [[sinks.xmpp]]\ndomain = \"example.org\"\nserver_user = \"server\"\n"
    ));
    assert_eq!(
        keys(&errors),
        ["sinks.xmpp[1].domain", "sinks.xmpp[2]"],
        "{errors}"
    );
    assert_eq!(
        errors.0[1].message,
        "same server user as sinks.xmpp[0] (server@example.org)"
    );
    let errors = rejected(&format!("{MINIMAL}[[sinks.xmpp]]\nserver_user = \"w\"\n"));
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "sinks.xmpp[0].domain",
            "required key is missing"
        )]
    );
}

#[test]
fn admin_jids_must_be_bare() {
    let errors = rejected(&format!(
        "{MINIMAL}[admin]\njids = [\"ok@example.org\", \"a@example.org/phone\", \"a@@b\"]\n"
    ));
    assert_eq!(
        keys(&errors),
        ["admin.jids[1]", "admin.jids[2]"],
        "{errors}"
    );
    assert_eq!(
        errors.0[0].message,
        "\"a@example.org/phone\" is not a bare JID (no '/')"
    );
}

#[test]
fn a_broken_section_does_not_add_noise_but_others_are_still_checked() {
    // [component] is broken (bad type) so its missing secret is not reported separately;
    // [store] is still validated.
    let errors = rejected("[component]\njid = 5\n[store]\ncache_bytes = 1\n");
    assert_eq!(
        keys(&errors),
        ["component.jid", "store.cache_bytes"],
        "{errors}"
    );
    assert_eq!(
        errors.0[0].message,
        "expected a string, found signed int `5`"
    );
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    let errors = rejected("[component]\njid = \"h.example.org\"\nsecret = 918273645\n");
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new("component.secret", "expected a string")]
    );
}

#[test]
fn a_section_that_is_not_a_table_is_reported() {
    let errors = rejected(&format!("store = \"/var/lib/herald\"\n{MINIMAL}"));
    assert_eq!(keys(&errors), ["store"], "{errors}");
    assert!(
        errors.0[0].message.starts_with("expected a table [store]"),
        "{errors}"
    );
}

#[test]
fn missing_config_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let errors = with_env(&[], || problems(load(&path)));
    assert_eq!(
        errors.to_string(),
        format!("cannot read {}: No such file or directory", path.display())
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let secret = Secret::new("hunter2".to_owned());
    assert!(!format!("{secret:?}").contains("hunter2"));
    let settings = with_env(&[], || ok(load_str(MINIMAL)));
    let debug = format!("{settings:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

// ---------------------------------------------------------------------------------------------
// [[sinks.webhook]]
// ---------------------------------------------------------------------------------------------

/// `MINIMAL` and one `[[sinks.webhook]]` entry made of `body`.
fn with_webhook(body: &str) -> String {
    format!("{MINIMAL}[[sinks.webhook]]\n{body}")
}

const HOOK_URL: &str = "url = \"https://game.example.org/hooks/presence\"\n";

#[test]
fn webhook_with_every_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("hook-key");
    std::fs::write(&key_file, "hmac-key\n").expect("write key");
    let toml = format!(
        "{MINIMAL}[[sinks.xmpp]]\ndomain = \"example.org\"\n\
         [[sinks.webhook]]\n\
         url = \"http://10.0.0.7:8080/hooks/presence?v=2\"\n\
         name = \"game\"\n\
         secret = \"k3y\"\n\
         headers = {{ Authorization = \"Bearer t0ken\", X-Tenant = \"blue\" }}\n\
         timeout = \"30s\"\n\
         batch_max = 100\n\
         batch_delay = \"200ms\"\n\
         max_backlog = 5000\n\
         retry_min = \"500ms\"\n\
         retry_max = \"1m\"\n\
         [[sinks.webhook]]\n\
         url = \"https://audit.example.org\"\n\
         secret_file = {key_file:?}\n"
    );
    let settings = ok(parse(&toml));
    assert_eq!(settings.xmpp_sinks[0].name, "xmpp:server@example.org");
    let [game, audit] = &settings.webhook_sinks[..] else {
        panic!("two webhook sinks expected: {settings:?}");
    };
    assert_eq!(game.url.as_str(), "http://10.0.0.7:8080/hooks/presence?v=2");
    assert_eq!(game.name, "game");
    assert_eq!(game.secret.as_ref().map(Secret::expose), Some("k3y"));
    assert_eq!(game.headers.len(), 2);
    assert_eq!(
        game.headers.get("authorization").map(|v| v.as_bytes()),
        Some(&b"Bearer t0ken"[..])
    );
    assert_eq!(
        game.headers.get("x-tenant").map(|v| v.as_bytes()),
        Some(&b"blue"[..])
    );
    assert!(game.headers.values().all(|v| v.is_sensitive()));
    assert_eq!(game.timeout, Duration::from_secs(30));
    assert_eq!(game.batch_max, 100);
    assert_eq!(game.batch_delay, Duration::from_millis(200));
    assert_eq!(game.max_backlog, 5000);
    assert_eq!(game.retry_min, Duration::from_millis(500));
    assert_eq!(game.retry_max, Duration::from_secs(60));

    assert_eq!(
        audit.name, "audit.example.org",
        "derived from host and path"
    );
    assert_eq!(audit.secret.as_ref().map(Secret::expose), Some("hmac-key"));
    assert!(audit.headers.is_empty());
}

#[test]
fn webhook_defaults() {
    let settings = ok(parse(&with_webhook(HOOK_URL)));
    let hook = &settings.webhook_sinks[0];
    assert_eq!(hook.name, "game.example.org/hooks/presence");
    assert!(hook.secret.is_none());
    assert!(hook.headers.is_empty());
    assert_eq!(hook.timeout, Duration::from_secs(10));
    assert_eq!(hook.batch_max, 500);
    assert_eq!(hook.batch_delay, Duration::ZERO);
    assert_eq!(hook.max_backlog, 1_000_000);
    assert_eq!(hook.retry_min, Duration::from_secs(1));
    assert_eq!(hook.retry_max, Duration::from_secs(300));
}

#[test]
fn webhook_default_name_keeps_an_explicit_port_and_drops_the_query() {
    let name = |url: &str| {
        let settings = ok(parse(&with_webhook(&format!("url = {url:?}\n"))));
        settings.webhook_sinks[0].name.clone()
    };
    assert_eq!(
        name("https://h.example.org:8443/a/b/?t=1"),
        "h.example.org:8443/a/b"
    );
    assert_eq!(name("https://h.example.org:443/"), "h.example.org");
    assert_eq!(name("http://[::1]:8080/hook"), "[::1]:8080/hook");
}

#[test]
fn webhook_url_is_required_and_must_be_http() {
    let errors = rejected(&with_webhook("name = \"game\"\n"));
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "sinks.webhook[0].url",
            "required key is missing"
        )]
    );
    for (url, expected) in [
        (
            "game.example.org/hooks",
            "not a valid URL: relative URL without a base",
        ),
        (
            "ftp://game.example.org/hooks",
            "scheme must be http or https, not \"ftp\"",
        ),
        (
            "https://user:hunter2@game.example.org/hooks",
            "must not contain credentials (user:password@): set headers.Authorization instead",
        ),
    ] {
        let errors = rejected(&with_webhook(&format!("url = {url:?}\n")));
        assert_eq!(
            errors.0,
            vec![ConfigProblem::new("sinks.webhook[0].url", expected)],
            "{url}"
        );
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
    }
}

#[test]
fn webhook_unknown_key_is_rejected_with_its_path() {
    let errors = rejected(&with_webhook(&format!("{HOOK_URL}retries = 3\n")));
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "sinks.webhook[0].retries",
            "unknown key (expected one of: url, name, secret, secret_file, headers, timeout, \
             batch_max, batch_delay, max_backlog, retry_min, retry_max)"
        )]
    );
}

#[test]
fn webhook_takes_at_most_one_of_secret_and_secret_file() {
    let errors = rejected(&with_webhook(&format!(
        "{HOOK_URL}secret = \"k\"\nsecret_file = \"/run/secrets/k\"\n"
    )));
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "sinks.webhook[0]",
            "set at most one of secret or secret_file"
        )]
    );
    let errors = rejected(&with_webhook(&format!("{HOOK_URL}secret = \"\"\n")));
    assert_eq!(
        errors.0,
        vec![ConfigProblem::new(
            "sinks.webhook[0].secret",
            "must not be empty"
        )]
    );
}

#[test]
fn webhook_headers_herald_sets_are_forbidden() {
    let errors = rejected(&with_webhook(&format!(
        "{HOOK_URL}headers = {{ Content-Type = \"text/plain\", X-Herald-Batch = \"1\", \
         x-herald-anything = \"2\", Host = \"evil.example\", X-Ok = \"fine\" }}\n"
    )));
    assert_eq!(
        keys(&errors),
        [
            "sinks.webhook[0].headers.Content-Type",
            "sinks.webhook[0].headers.Host",
            "sinks.webhook[0].headers.X-Herald-Batch",
            "sinks.webhook[0].headers.x-herald-anything",
        ],
        "{errors}"
    );
    assert!(errors
        .0
        .iter()
        .all(|p| p.message == "is set by herald and cannot be configured"));
}

#[test]
fn webhook_header_values_are_validated_but_never_echoed() {
    let errors = rejected(&with_webhook(&format!(
        "{HOOK_URL}headers = {{ Authorization = \"Bearer se\\ncret\", \"Bad Name\" = \"v\" }}\n"
    )));
    assert_eq!(
        errors.0,
        vec![
            ConfigProblem::new(
                "sinks.webhook[0].headers.Authorization",
                "is not a valid header value (visible ASCII characters, spaces and tabs only)"
            ),
            ConfigProblem::new(
                "sinks.webhook[0].headers.Bad Name",
                "\"Bad Name\" is not a valid header name"
            ),
        ]
    );
    let errors = rejected(&with_webhook(&format!(
        "{HOOK_URL}headers = \"Bearer s3cret-token\"\n"
    )));
    assert_eq!(keys(&errors), ["sinks.webhook[0].headers"], "{errors}");
    assert!(!errors.to_string().contains("s3cret-token"), "{errors}");
}

#[test]
fn webhook_numbers_and_durations_are_bounded() {
    let errors = rejected(&with_webhook(&format!(
        "{HOOK_URL}batch_max = 0\nmax_backlog = 0\ntimeout = \"0s\"\n\
         retry_min = \"10s\"\nretry_max = \"5s\"\n"
    )));
    let message = |key: &str| errors.for_key(key).map(|p| p.message.as_str());
    assert_eq!(
        message("sinks.webhook[0].batch_max"),
        Some("must be in 1..=10000")
    );
    assert_eq!(
        message("sinks.webhook[0].max_backlog"),
        Some("must be at least 1")
    );
    assert_eq!(
        message("sinks.webhook[0].timeout"),
        Some("must be greater than 0")
    );
    assert_eq!(
        message("sinks.webhook[0].retry_max"),
        Some("must be at least retry_min (10s)")
    );
    assert_eq!(errors.0.len(), 4, "{errors}");

    assert!(parse(&with_webhook(&format!("{HOOK_URL}batch_max = 10000\n"))).is_ok());
    let errors = rejected(&with_webhook(&format!("{HOOK_URL}batch_max = 10001\n")));
    assert_eq!(keys(&errors), ["sinks.webhook[0].batch_max"], "{errors}");
}

#[test]
fn sink_names_are_unique_across_all_sinks() {
    let errors = rejected(&format!(
        "{MINIMAL}[[sinks.xmpp]]\ndomain = \"example.org\"\nserver_user = \"world\"\n\
         [[sinks.webhook]]\n{HOOK_URL}\
         [[sinks.webhook]]\n{HOOK_URL}\
         [[sinks.webhook]]\nurl = \"https://other.example.org/\"\nname = \"xmpp:world@example.org\"\n"
    ));
    assert_eq!(
        errors.0,
        vec![
            ConfigProblem::new(
                "sinks.webhook[1].name",
                "\"game.example.org/hooks/presence\" is already the name of sinks.webhook[0] \
                 (derived from url; set a distinct name)"
            ),
            ConfigProblem::new(
                "sinks.webhook[2].name",
                "\"xmpp:world@example.org\" is already the name of sinks.xmpp[0]"
            ),
        ]
    );
    let distinct = format!(
        "{MINIMAL}[[sinks.webhook]]\n{HOOK_URL}[[sinks.webhook]]\n{HOOK_URL}name = \"copy\"\n"
    );
    assert!(parse(&distinct).is_ok());
}

#[test]
fn webhook_secrets_never_appear_in_debug_output() {
    let settings = ok(parse(&with_webhook(&format!(
        "{HOOK_URL}secret = \"hmac-s3cret\"\nheaders = {{ Authorization = \"Bearer t0ken\" }}\n"
    ))));
    let debug = format!("{settings:?}");
    assert!(!debug.contains("hmac-s3cret"), "{debug}");
    assert!(!debug.contains("t0ken"), "{debug}");
}

#[test]
fn server_domains_default_to_the_parent_domain_and_are_validated() {
    let s = ok(parse(
        "[component]\njid = \"herald.Example.org\"\nsecret = \"s\"\n",
    ));
    assert_eq!(s.component.server_domains, vec!["example.org".to_owned()]);
    let s = ok(parse(
        "[component]\njid = \"herald.localhost\"\nsecret = \"s\"\nserver_domains = [\"A.example\", \"b.example\", \"a.example\"]\n",
    ));
    assert_eq!(
        s.component.server_domains,
        vec!["a.example".to_owned(), "b.example".to_owned()]
    );
    let errors = rejected(
        "[component]\njid = \"herald.localhost\"\nsecret = \"s\"\nserver_domains = [\"user@example.org\"]\nmax_stanza_bytes = 10\n\n[presence]\nmax_status_bytes = 1\n",
    );
    let keys = keys(&errors);
    assert!(keys.contains(&"component.server_domains[0]"), "{keys:?}");
    assert!(keys.contains(&"component.max_stanza_bytes"), "{keys:?}");
    assert!(keys.contains(&"presence.max_status_bytes"), "{keys:?}");
}

// ------------------------------------------------------------------------------------------------
// [http]
// ------------------------------------------------------------------------------------------------

#[test]
fn http_listens_on_loopback_8347_without_a_token_by_default() {
    let settings = with_env(&[], || ok(load_str(MINIMAL)));
    assert_eq!(
        settings.http.listen,
        Some("127.0.0.1:8347".parse().unwrap())
    );
    assert!(settings.http.token.is_none());
}

#[test]
fn http_listen_empty_turns_the_listener_off() {
    let toml = format!("{MINIMAL}[http]\nlisten = \"\"\n");
    let settings = with_env(&[], || ok(load_str(&toml)));
    assert_eq!(settings.http.listen, None);
    // Also from the environment (a string, not parsed as TOML).
    let settings = with_env(&[("HERALD_HTTP__LISTEN", "")], || ok(load_str(MINIMAL)));
    assert_eq!(settings.http.listen, None);
}

#[test]
fn http_listen_off_loopback_needs_allow_non_loopback() {
    for addr in ["0.0.0.0:8347", "192.0.2.10:8347", "[::]:8347"] {
        let toml = format!("{MINIMAL}[http]\nlisten = \"{addr}\"\n");
        let errors = with_env(&[], || problems(load_str(&toml)));
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].key, "http.listen");
        assert!(
            errors.0[0].message.contains("allow_non_loopback"),
            "{errors}"
        );
        let toml = format!("{MINIMAL}[http]\nlisten = \"{addr}\"\nallow_non_loopback = true\n");
        let settings = with_env(&[], || ok(load_str(&toml)));
        assert_eq!(settings.http.listen, Some(addr.parse().unwrap()));
    }
    for addr in ["127.0.0.2:9000", "[::1]:9000", "127.0.0.1:0"] {
        let toml = format!("{MINIMAL}[http]\nlisten = \"{addr}\"\n");
        let settings = with_env(&[], || ok(load_str(&toml)));
        assert_eq!(settings.http.listen, Some(addr.parse().unwrap()));
    }
}

#[test]
fn http_listen_must_be_an_ip_and_port() {
    for addr in ["localhost:8347", "127.0.0.1", "8347", "127.0.0.1:99999"] {
        let toml = format!("{MINIMAL}[http]\nlisten = \"{addr}\"\n");
        let errors = with_env(&[], || problems(load_str(&toml)));
        assert_eq!(errors.0.len(), 1, "{addr}: {errors}");
        assert_eq!(errors.0[0].key, "http.listen", "{addr}");
    }
}

#[test]
fn http_token_comes_from_token_or_token_file_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "0123456789abcdef-from-file\n").unwrap();
    let toml = format!("{MINIMAL}[http]\ntoken_file = '{}'\n", file.display());
    let settings = with_env(&[], || ok(load_str(&toml)));
    assert_eq!(
        settings.http.token.as_ref().map(Secret::expose),
        Some("0123456789abcdef-from-file")
    );
    let toml = format!("{MINIMAL}[http]\ntoken = \"0123456789abcdef\"\n");
    let settings = with_env(&[], || ok(load_str(&toml)));
    assert_eq!(
        settings.http.token.as_ref().map(Secret::expose),
        Some("0123456789abcdef")
    );
    // The token's Debug never shows it.
    assert!(!format!("{:?}", settings.http).contains("0123456789abcdef"));

    for (body, key) in [
        ("token = \"short\"", "http.token"),
        ("token = \"0123456789 abcdef\"", "http.token"),
        (
            &format!(
                "token = \"0123456789abcdef\"\ntoken_file = '{}'",
                file.display()
            ) as &str,
            "http",
        ),
        (
            "token_file = '/nonexistent/herald-token'",
            "http.token_file",
        ),
    ] {
        let toml = format!("{MINIMAL}[http]\n{body}\n");
        let errors = with_env(&[], || problems(load_str(&toml)));
        assert_eq!(errors.0.len(), 1, "{body}: {errors}");
        assert_eq!(errors.0[0].key, key, "{body}: {errors}");
    }
}

#[test]
fn push_defaults_follow_mod_cloud_notify_and_the_served_domains() {
    use herald::config::MucServices;
    use herald::push::RoomMode;
    let toml = format!("{MINIMAL}server_domains = [\"example.org\", \"chat.example.org\"]\n");
    let p = with_env(&[], || ok(load_str(&toml))).push;
    assert_eq!(p.domains, ["example.org", "chat.example.org"]);
    assert_eq!(p.muc_services, MucServices::UnderDomains);
    assert_eq!(
        (
            p.max_devices,
            p.max_rooms_per_user,
            p.max_rooms,
            p.max_errors
        ),
        (5, 50, 10_000, 16)
    );
    assert_eq!(p.default_room_mode, RoomMode::Always);
    assert_eq!(p.room_nick, "herald");
    assert!(!p.with_body && !p.with_sender);
    assert_eq!(p.important_body, "New Message!");
    assert_eq!(p.session_timeout, Duration::from_secs(600));
    // Without server_domains: the parent domain of the component.
    let p = with_env(&[], || ok(load_str(MINIMAL))).push;
    assert_eq!(p.domains, ["example.org"]);
    let toml = format!(
        "{MINIMAL}[push]\ndomains = [\"a.example\"]\nmuc_services = [\"*\"]\ndefault_room_mode = \"mentioned\"\n"
    );
    let p = with_env(&[], || ok(load_str(&toml))).push;
    assert_eq!(p.domains, ["a.example"]);
    assert_eq!(p.muc_services, MucServices::Any);
    assert_eq!(p.default_room_mode, RoomMode::Mentioned);
}

#[test]
fn bad_push_values_are_each_reported_with_their_key() {
    let toml = format!(
        "{MINIMAL}[push]\ndomains = [\"a@b\"]\nmuc_services = []\nmax_devices = 0\nmax_rooms = 0\n\
         default_room_mode = \"sometimes\"\nroom_nick = \"\"\nmax_errors = 0\nsession_timeout = \"2h\"\n"
    );
    let errors = with_env(&[], || problems(load_str(&toml)));
    let mut found = keys(&errors);
    found.sort_unstable();
    assert_eq!(
        found,
        [
            "push.default_room_mode",
            "push.domains[0]",
            "push.max_devices",
            "push.max_errors",
            "push.max_rooms",
            "push.muc_services",
            "push.room_nick",
            "push.session_timeout",
        ],
        "{errors}"
    );
}

#[test]
fn liveness_and_ejabberd_api_are_read_and_checked() {
    let s = ok(parse(&format!(
        "{MINIMAL}[presence]\nliveness = \"on\"\nliveness_interval = \"2s\"\n[presence.ejabberd_api]\nurl = \"http://127.0.0.1:5280/api/\"\ntoken = \"abc\"\n"
    )));
    assert_eq!(s.presence.liveness, herald::config::LivenessMode::On);
    assert_eq!(s.presence.liveness_interval, Duration::from_secs(2));
    let api = s.presence.ejabberd_api.expect("api configured");
    assert_eq!(api.url, "http://127.0.0.1:5280/api");
    assert_eq!(
        api.token.map(|t| t.expose().to_owned()).as_deref(),
        Some("abc")
    );
    let defaults = ok(parse(MINIMAL));
    assert_eq!(
        defaults.presence.liveness,
        herald::config::LivenessMode::Auto
    );
    assert_eq!(
        defaults.presence.liveness_interval,
        Duration::from_secs(300)
    );
    assert!(defaults.presence.ejabberd_api.is_none());
    let errors = rejected(&format!(
        "{MINIMAL}[presence]\nliveness_interval = \"10ms\"\n[presence.ejabberd_api]\nurl = \"ftp://x\"\n"
    ));
    assert_eq!(
        keys(&errors),
        ["presence.liveness_interval", "presence.ejabberd_api.url"]
    );
}
