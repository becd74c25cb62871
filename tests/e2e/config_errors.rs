//! `llmgw check` and `llmgw run` on bad configurations: every problem as
//! FILE:LINE: message, a non-zero exit, and nothing served.

use std::process::Command;

use llmgw_e2e::{llmgw_bin, TempDir};

fn check(text: &str) -> (bool, String, String) {
    let dir = TempDir::new("check");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(llmgw_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn every_error_is_reported_with_its_line() {
    let text = r#"[global]
maxconn = 100

[[frontend]]
name = "f"
bind = ["127.0.0.1:notaport"]
default_backend = "nowhere"

[[frontend.route]]
backend = "ghost"
model = "gpt-*"

[[backend]]
name = "b"
auth = { type = "bearer", file = "/nonexistent/secret" }
[[backend.server]]
name = "s"
address = "127.0.0.1:9000"

[[backend]]
name = "b"
[[backend.server]]
name = "s"
address = "127.0.0.1:9001"
"#;
    let (ok, _, err) = check(text);
    assert!(!ok);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        vec![
            "FILE:6: invalid address '127.0.0.1:notaport' (expected IP:PORT, [IPv6]:PORT, *:PORT or :::PORT)",
            "FILE:7: default_backend 'nowhere' does not exist",
            "FILE:10: route points at backend 'ghost', which does not exist",
            "FILE:15: auth: cannot read secret file '/nonexistent/secret': entity not found",
            "FILE:21: duplicate backend name 'b'",
        ],
        "{err}"
    );
}

#[test]
fn unknown_key_and_syntax_error() {
    let (ok, _, err) = check("[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:1\"]\nlisten = 5\n");
    assert!(!ok);
    assert!(err.starts_with("FILE:4: unknown field `listen`"), "{err}");

    let (ok, _, err) = check("[[frontend]]\nname = \"f\n");
    assert!(!ok);
    assert!(err.starts_with("FILE:2: "), "{err}");
}

#[test]
fn missing_secret_never_prints_other_secrets() {
    let text = r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "b"
[[backend]]
name = "b"
auth = { type = "bearer", env = "LLMGW_E2E_SURELY_UNSET" }
[[backend.server]]
name = "s"
address = "127.0.0.1:9000"
"#;
    let (ok, _, err) = check(text);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "FILE:8: auth: environment variable 'LLMGW_E2E_SURELY_UNSET' is not set"
    );
}

#[test]
fn valid_config_passes_and_run_refuses_a_bad_one() {
    let (ok, out, err) = check(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"mock\"\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");

    let dir = TempDir::new("run-bad");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[frontend]]\nname = 1\n").unwrap();
    let out = Command::new(llmgw_bin())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:2: "));
}
