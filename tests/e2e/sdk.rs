//! The official OpenAI and Anthropic Python SDKs, unchanged, against the
//! embedded default configuration.

use std::process::Command;

use llmgw_e2e::{python, root, Proc};

#[test]
fn openai_and_anthropic_sdks_against_the_embedded_default() {
    let mut gw = Proc::spawn(&["--bind", "127.0.0.1:0", "--stats", "127.0.0.1:0"], &[]);
    let addr = gw.wait_addr("frontend 'gateway' listening on");
    gw.wait_line("embedded default");
    let out = Command::new(python())
        .arg(root().join("tests/python/test_sdks.py"))
        .arg(format!("http://{addr}"))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk checks passed"), "{stdout}");
}
