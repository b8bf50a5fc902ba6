//! The real `router` binary's command line.

use std::process::{Command, Stdio};

#[test]
fn bad_configuration_exits_64_with_a_reason() {
    let broken = std::env::temp_dir().join(format!("polysocket-router-{}-broken.json", std::process::id()));
    std::fs::write(&broken, "{not json").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_router"))
        .args(["--listen", "127.0.0.1:0", "--redis", "redis://127.0.0.1:1"])
        .arg("--tokens")
        .arg(&broken)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid tokens file"), "{output:?}");

    let bad_flag = Command::new(env!("CARGO_BIN_EXE_router")).arg("--create-attempts").arg("0").output().unwrap();
    assert_eq!(bad_flag.status.code(), Some(64));
}
