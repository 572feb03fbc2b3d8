//! Flags through the real binaries: unknown flags and bad values exit non-zero naming the flag;
//! -help lists every flag with its default; -version prints a version.

use shardgate_e2e::run;

#[test]
fn unknown_flag_exits_non_zero_and_names_it() {
    let (code, _, err) = run("shardgate", &["-noSuchFlag=1"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("-noSuchFlag"), "stderr: {err}");
    let (code, _, err) = run("shardgate-node", &["--alsoMissing"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("-alsoMissing"), "stderr: {err}");
}

#[test]
fn bad_values_exit_non_zero_and_name_the_flag() {
    for (arg, flag) in [
        ("-replicationFactor=two", "-replicationFactor"),
        ("-vmstorageDialTimeout=3", "-vmstorageDialTimeout"),
        ("-maxInsertRequestSize=1XB", "-maxInsertRequestSize"),
        ("-sortLabels=maybe", "-sortLabels"),
    ] {
        let (code, _, err) = run("shardgate", &[arg]);
        assert_ne!(code, Some(0), "{arg}");
        assert!(err.contains(flag), "{arg}: {err}");
    }
    // A bool flag takes no separate value: the stray "false" is fatal, as in vminsert.
    let (code, _, err) = run("shardgate", &["-sortLabels", "false"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("unprocessed"), "{err}");
}

#[test]
fn bad_storage_nodes_are_fatal_at_startup() {
    for nodes in ["::1", "a,a", "http://x:8400", "a,,b"] {
        let (code, _, err) = run(
            "shardgate",
            &[
                &format!("-storageNode={nodes}"),
                "-httpListenAddr=127.0.0.1:0",
            ],
        );
        assert_eq!(code, Some(1), "{nodes}: {err}");
        assert!(err.contains("storageNode"), "{nodes}: {err}");
    }
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let (code, out, _) = run("shardgate", &["-help"]);
    assert_eq!(code, Some(0));
    for needle in [
        "-storageNode array",
        "-storageNode.placement string",
        "(default \"rendezvous\")",
        "-insert.maxQueueDuration duration",
        "(default 1m)",
        "-maxInsertRequestSize size",
        "(default 33554432)",
        "-envflag.enable",
        "-replicationFactor int",
    ] {
        assert!(out.contains(needle), "-help lacks {needle:?}");
    }
    let (code, out, _) = run("shardgate-node", &["-help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("STAND-IN"), "{out}");
    assert!(out.contains("NOT a database"), "{out}");
    assert!(out.contains("-vminsertAddr string"));
}

#[test]
fn version_prints_and_exits_zero() {
    let (code, out, _) = run("shardgate", &["-version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("shardgate-v"), "{out}");
}

#[test]
fn envflag_values_apply_and_bad_ones_are_fatal() {
    let out = std::process::Command::new(shardgate_e2e::bin("shardgate"))
        .args(["-envflag.enable", "-envflag.prefix=SG_"])
        .env("SG_replicationFactor", "zero")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-replicationFactor"));
}
