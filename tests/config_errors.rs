//! One fixture per invalid-config rule (`tests/fixtures/config/invalid-*.toml`), each with the
//! exact error text expected (`.err` beside it: the Display of every `Problem`, one per line).
//! Error text is user interface: it is tested like one.
//!
//! `HOPWATCH_BLESS=1 cargo test --test config_errors` rewrites the `.err` files from the
//! loader's current output; read the diff before committing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hopwatch::config::{load_str, ConfigError, Problem};

/// The only environment the fixtures see: no process variable is ever read.
const SECRET: &str = "s3cret";

fn env(name: &str) -> Option<String> {
    (name == "API_KEY").then(|| SECRET.to_string())
}

/// Fewer fixtures than this means the folder was emptied or moved by mistake.
const MIN_FIXTURES: usize = 20;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// Every `invalid-*.<ext>` in the fixture folder, sorted.
fn fixture_files(ext: &str) -> Vec<PathBuf> {
    let dir = fixture_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .filter(|p| file_name(p).starts_with("invalid-"))
        .collect();
    files.sort();
    files
}

fn fixtures() -> Vec<PathBuf> {
    fixture_files("toml")
}

fn fixture(name: &str) -> PathBuf {
    let path = fixture_dir().join(name);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// Loads a fixture under its bare file name, as the `.err` files spell it.
fn problems_of(path: &Path) -> Result<Vec<Problem>, String> {
    let name = file_name(path);
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    match load_str(name, &text, &env) {
        Ok(_) => Err(format!("{name}: loaded without error")),
        Err(ConfigError::Invalid(problems)) => Ok(problems),
        Err(other) => Err(format!("{name}: unexpected error {other:?}")),
    }
}

fn joined(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_invalid_fixture_gives_its_exact_message() {
    let files = fixtures();
    assert!(
        files.len() >= MIN_FIXTURES,
        "{} holds {} invalid-*.toml fixtures, expected at least {MIN_FIXTURES}",
        fixture_dir().display(),
        files.len()
    );
    let bless = std::env::var_os("HOPWATCH_BLESS").is_some();
    let mut failures = Vec::new();
    for toml in &files {
        let name = file_name(toml);
        let actual = match problems_of(toml) {
            Ok(problems) => joined(&problems),
            Err(why) => {
                failures.push(why);
                continue;
            }
        };
        let err = toml.with_extension("err");
        if bless {
            std::fs::write(&err, format!("{actual}\n")).expect("write .err");
            continue;
        }
        let expected = match std::fs::read_to_string(&err) {
            Ok(text) => text,
            Err(e) => {
                failures.push(format!(
                    "{name}: has no {} beside it ({e}); actual output:\n{actual}",
                    file_name(&err)
                ));
                continue;
            }
        };
        let expected = expected.strip_suffix('\n').unwrap_or(&expected);
        if expected != actual {
            failures.push(format!(
                "{name}: error text differs\n--- expected ({})\n{expected}\n--- actual\n{actual}\n---",
                file_name(&err)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// `warning-*.toml`: configs that load, each with the exact warnings expected (`.warn` beside
/// it). A warning is user interface too.
#[test]
fn every_warning_fixture_loads_with_its_exact_warnings() {
    let dir = fixture_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| file_name(p).starts_with("warning-"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no warning-*.toml in {}", dir.display());
    let bless = std::env::var_os("HOPWATCH_BLESS").is_some();
    for toml in &files {
        let name = file_name(toml);
        let text = std::fs::read_to_string(toml).expect("read");
        let config = load_str(name, &text, &env)
            .unwrap_or_else(|e| panic!("{name} must load (it only warns):\n{e}"));
        let actual = joined(&config.warnings);
        assert!(!actual.is_empty(), "{name} loaded without a warning");
        let warn = toml.with_extension("warn");
        if bless {
            std::fs::write(&warn, format!("{actual}\n")).expect("write .warn");
            continue;
        }
        let expected = std::fs::read_to_string(&warn)
            .unwrap_or_else(|e| panic!("{name}: no {} ({e}); actual:\n{actual}", file_name(&warn)));
        assert_eq!(expected.trim_end(), actual, "{name}");
    }
}

#[test]
fn every_err_file_has_its_fixture() {
    let orphans: Vec<_> = fixture_files("err")
        .into_iter()
        .filter(|err| !err.with_extension("toml").exists())
        .map(|err| file_name(&err).to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        "these .err files have no .toml fixture beside them: {}",
        orphans.join(", ")
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let several = fixture("invalid-several.toml");
    let problems = problems_of(&several).unwrap_or_else(|e| panic!("{e}"));
    let errors = joined(&problems);
    assert!(
        problems.len() >= 3,
        "invalid-several.toml: expected every problem at once, got {}:\n{errors}",
        problems.len()
    );
    let chains: BTreeSet<_> = problems
        .iter()
        .filter_map(|p| p.scope.strip_prefix("chain "))
        .map(|rest| rest.split(" hop ").next().unwrap_or(rest))
        .collect();
    assert!(
        chains.len() >= 2,
        "invalid-several.toml: expected problems in at least two chains, got {chains:?}:\n{errors}"
    );
    assert!(
        errors.contains("chain \"orders\"") && errors.contains("chain \"payments\""),
        "invalid-several.toml:\n{errors}"
    );
    assert!(
        problems
            .windows(2)
            .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)),
        "invalid-several.toml: problems are not in file order:\n{errors}"
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    // The dedicated fixture: the secret is expanded on a hop that fails for other reasons.
    let secret = fixture("invalid-secret-not-echoed.toml");
    let text = std::fs::read_to_string(&secret).expect("read");
    assert!(
        text.contains("${API_KEY}"),
        "invalid-secret-not-echoed.toml must use ${{API_KEY}} in a header"
    );
    let problems = problems_of(&secret).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        problems
            .iter()
            .any(|p| p.scope == "chain \"orders\" hop \"target\""),
        "invalid-secret-not-echoed.toml: expected a problem on the hop that carries the secret:\n{}",
        joined(&problems)
    );
    // And every fixture, through Display and Debug alike.
    for toml in fixtures() {
        let Ok(problems) = problems_of(&toml) else {
            continue; // reported by every_invalid_fixture_gives_its_exact_message
        };
        let shown = format!("{}\n{problems:?}", joined(&problems));
        assert!(
            !shown.contains(SECRET),
            "{} leaks the secret:\n{shown}",
            file_name(&toml)
        );
    }
}

#[test]
fn every_example_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}): the example configs (one per topology) are expected there",
            dir.display()
        )
    });
    let mut examples: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    examples.sort();
    assert!(
        !examples.is_empty(),
        "{} holds no *.toml: the example configs (one per topology) are expected there",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in &examples {
        // The full path, so that a relative ca_file resolves beside the example.
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                failures.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        if let Err(e) = load_str(&name, &text, &|_| Some("example".to_string())) {
            failures.push(format!("{name} is invalid:\n{e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
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

/// `auth` as written loads into its checked settings: SigV4's default signing name, OAuth 2.0
/// scopes as a set, basic client authentication by default, and the client secret kept from
/// `Debug` (and so from the exported config hash) while a changed secret still changes the chain.
#[test]
fn auth_loads_with_its_defaults_and_hides_the_client_secret() {
    use hopwatch::config::{Auth, TokenClientAuth};
    let text = |secret_var: &str| {
        format!(
            "[[chain]]\nname = \"a\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"gw\"\nrole = \"gateway\"\nurl = \"https://abc.execute-api.eu-west-1.amazonaws.com/prod/x\"\nauth = {{ sigv4 = {{ region = \"eu-west-1\" }} }}\n[[chain.hop]]\nname = \"t\"\nrole = \"target\"\nurl = \"http://127.0.0.1:1/\"\nauth = {{ oauth2 = {{ token_url = \"http://127.0.0.1:9/token\", client_id = \"abc\", client_secret = \"${{{secret_var}}}\", scopes = [\"b/w\", \"a/r\", \"b/w\"] }} }}\n"
        )
    };
    let env = |name: &str| match name {
        "API_KEY" => Some(SECRET.to_string()),
        "OTHER" => Some("another-secret".to_string()),
        _ => None,
    };
    let config = load_str("auth.toml", &text("API_KEY"), &env).expect("valid");
    let hops = &config.chains[0].hops;
    match &hops[0].auth {
        Some(Auth::SigV4(s)) => {
            assert_eq!(
                (s.region.as_str(), s.service.as_str()),
                ("eu-west-1", "execute-api")
            );
            assert!(s.role_arn.is_none() && s.external_id.is_none());
        }
        other => panic!("gateway auth: {other:?}"),
    }
    match &hops[1].auth {
        Some(Auth::OAuth2(o)) => {
            assert_eq!(o.scopes, ["a/r", "b/w"]);
            assert_eq!(o.client_auth, TokenClientAuth::Basic);
            assert_eq!(o.client_secret.expose(), SECRET);
        }
        other => panic!("target auth: {other:?}"),
    }
    let shown = format!("{config:?}");
    assert!(
        !shown.contains(SECRET),
        "Debug leaks the client secret: {shown}"
    );
    assert!(shown.contains("client_secret: <redacted>"), "{shown}");
    let other = load_str("auth.toml", &text("OTHER"), &env).expect("valid");
    assert_ne!(
        config.chains[0], other.chains[0],
        "a changed client secret is a changed chain (a reload restarts it)"
    );
}
