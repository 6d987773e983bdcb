//! One fixture per invalid-config rule (`tests/fixtures/config/invalid-*.toml`), each with the
//! exact error text expected (`.err` beside it). Error text is user interface: it is tested
//! like one. `HOPWATCH_BLESS=1 cargo test --test config_errors` rewrites the `.err` files; read
//! the diff before committing it.

use std::path::{Path, PathBuf};

use hopwatch::config::{load_str, ConfigError};

const SECRET: &str = "s3cret-value";

fn env(name: &str) -> Option<String> {
    (name == "API_KEY").then(|| SECRET.to_string())
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn errors_of(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let text = std::fs::read_to_string(path).expect("read fixture");
    match load_str(name, &text, &env) {
        Ok(_) => panic!("{name} loaded without error"),
        Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| format!("{p}\n")).collect(),
        Err(other) => panic!("{name}: unexpected error {other}"),
    }
}

#[test]
fn every_invalid_fixture_gives_its_exact_message() {
    let files = fixtures();
    assert!(files.len() >= 30, "only {} fixtures", files.len());
    let bless = std::env::var_os("HOPWATCH_BLESS").is_some();
    let mut failures = Vec::new();
    for toml in &files {
        let actual = errors_of(toml);
        let err = toml.with_extension("err");
        if bless {
            std::fs::write(&err, &actual).expect("write .err");
            continue;
        }
        let expected = std::fs::read_to_string(&err)
            .unwrap_or_else(|_| panic!("{} has no .err file beside it", toml.display()));
        if expected != actual {
            failures.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                toml.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_err_file_has_its_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "err") {
            assert!(
                path.with_extension("toml").exists(),
                "{} has no fixture",
                path.display()
            );
        }
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let several = fixtures()
        .into_iter()
        .find(|p| p.ends_with("invalid-several.toml"))
        .expect("invalid-several.toml");
    let errors = errors_of(&several);
    assert!(
        errors.lines().count() >= 5,
        "expected every problem, got:\n{errors}"
    );
    assert!(errors.contains("chain \"orders\"") && errors.contains("chain \"payments\""));
}

#[test]
fn secrets_never_appear_in_errors() {
    for toml in fixtures() {
        let errors = errors_of(&toml);
        assert!(
            !errors.contains(SECRET),
            "{} leaks the secret:\n{errors}",
            toml.display()
        );
    }
}

#[test]
fn every_example_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let name = path.display().to_string();
        if let Err(e) = load_str(&name, &text, &|_| Some("example".to_string())) {
            panic!("{name} is invalid:\n{e}");
        }
        count += 1;
    }
    assert!(
        count >= 6,
        "examples/ holds {count} configs; one per topology T1-T6 is expected"
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let text = "[[chain]]\nname = \"a\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"x\"\nrole = \"target\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { \"x-api-key\" = \"${API_KEY}\", \"x-team\" = \"platform\" }\n";
    let config = load_str("secret.toml", text, &env).expect("valid");
    let shown = format!("{config:?}");
    assert!(!shown.contains(SECRET), "Debug leaks the secret: {shown}");
    assert!(shown.contains("x-api-key: <redacted>"), "{shown}");
    assert!(
        shown.contains("platform"),
        "plain values stay visible: {shown}"
    );
    let header = &config.chains[0].hops[0].headers;
    assert!(header.iter().any(|h| h.value.is_sensitive()));
}
