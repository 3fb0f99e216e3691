//! The binary's modes and options, without privileges.

use std::process::Command;

fn sniffer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trafficmap-sniffer"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TRAFFICMAP_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn report_mode_without_the_ca_file_says_so_and_fails() {
    let out = sniffer()
        .args([
            "--no-capture",
            "--no-scan",
            "--ca-file",
            "/nonexistent/ca.crt",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot load the operator CA from /nonexistent/ca.crt"),
        "{stderr}"
    );
}

#[test]
fn report_mode_refuses_a_plain_http_operator_url() {
    let out = sniffer()
        .args([
            "--no-capture",
            "--no-scan",
            "--operator-url",
            "http://op:8080",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the scheme must be https"));
}

#[test]
fn jsonl_with_nothing_enabled_exits_at_once_with_no_output() {
    let out = sniffer()
        .args([
            "--output",
            "jsonl",
            "--no-capture",
            "--no-scan",
            "--duration",
            "5",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("final counters"));
}

#[test]
fn every_option_can_come_from_the_environment() {
    let out = sniffer()
        .env("TRAFFICMAP_OUTPUT", "jsonl")
        .env("TRAFFICMAP_NO_CAPTURE", "true")
        .env("TRAFFICMAP_NO_SCAN", "true")
        .env("TRAFFICMAP_DURATION", "1s")
        .env("NODE_NAME", "node-a")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("node-a"));
}

#[test]
fn help_documents_the_environment_variables() {
    let out = sniffer().arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "TRAFFICMAP_OUTPUT",
        "TRAFFICMAP_SCAN_INTERVAL",
        "TRAFFICMAP_NO_CAPTURE",
        "TRAFFICMAP_NO_SCAN",
        "TRAFFICMAP_DURATION",
        "NODE_NAME",
        "TRAFFICMAP_OPERATOR_URL",
        "TRAFFICMAP_CA_FILE",
        "TRAFFICMAP_TOKEN_FILE",
        "TRAFFICMAP_REPORT_INTERVAL",
        "TRAFFICMAP_BUFFER_BYTES",
        "TRAFFICMAP_MAX_BODY_BYTES",
        "TRAFFICMAP_METRICS_ADDR",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
}

#[test]
fn bad_durations_are_refused() {
    let out = sniffer()
        .args(["--output", "jsonl", "--duration", "soon"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}
