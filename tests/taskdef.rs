//! `skiff validate` over the real task definitions of tests/fixtures/taskdefs and over each
//! form and limit. Needs no root and no registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/taskdefs");

/// What `skiff validate` must say of each fixture.
enum Expect {
    /// Valid, with this family and number of containers.
    Valid(&'static str, usize),
    /// Invalid: exactly these `path: message` lines (message prefixes), in order.
    Invalid(&'static [&'static str]),
}
use Expect::*;

/// Every fixture, by file name. A fixture without an entry fails the test.
const TABLE: &[(&str, Expect)] = &[
    ("add-drop-capabilities.json", Valid("ecsftest-add-drop-capabilities", 1)),
    (
        "appmesh-plugin-validator.json",
        Invalid(&[
            "proxyConfiguration: App Mesh proxy configuration is not supported",
            "containerDefinitions[0].logConfiguration.logDriver: awslogs is not supported",
        ]),
    ),
    ("aws-cli-ex1-cli-input-json-sleep360.json", Valid("sleep360", 1)),
    ("aws-cli-ex1-register-output.json", Valid("sleep360", 1)),
    ("aws-cli-ex3-web-timer-volumes.json", Valid("web-timer", 2)),
    ("busybox-port-5180.json", Valid("ecsftest-busybox-port-5180", 1)),
    (
        "container-ordering-complete.json",
        Valid("ecsftest-container-ordering-complete-condition", 2),
    ),
    (
        "container-ordering-healthy.json",
        Valid("ecsftest-container-ordering-complete-condition", 2),
    ),
    (
        "container-ordering-timedout.json",
        Valid("ecsftest-container-ordering-timeout", 2),
    ),
    ("datavolume.json", Valid("ecsinteg-datavolume-test", 3)),
    ("devices.json", Valid("ecsftest-devices", 1)),
    (
        "firelens-fluentbit-fluent-logger-awsvpc.json",
        Invalid(&[
            "containerDefinitions[0].logConfiguration.logDriver: awslogs is not supported",
            "containerDefinitions[0].firelensConfiguration: FireLens log routing is not supported",
            "containerDefinitions[1].logConfiguration.logDriver: awsfirelens is not supported",
        ]),
    ),
    (
        "gmsa-ssm.json",
        Invalid(&[
            "containerDefinitions[0].dockerSecurityOptions[0]: \"credentialspec:$$$TEST_SSM_ARN$$$\": gMSA credential specs are not supported",
        ]),
    ),
    (
        "granular-stop-timeout.json",
        Valid("ecsftest-container-granular-stop-timeout", 3),
    ),
    ("init-process.json", Valid("ecsftest-init-process", 1)),
    ("network-link.json", Valid("ecsinteg-network-link", 2)),
    ("nofiles-ulimit.json", Valid("ecsftest-ulimit-test", 1)),
    (
        "nvidia-gpu.json",
        Invalid(&["containerDefinitions[0].resourceRequirements[0].type: GPU is not supported"]),
    ),
    ("oom-task.json", Valid("ecsftest-oom-task", 1)),
    (
        "pid-namespace-task-share.json",
        Valid("ecsftest-task-pid-namespace-share", 1),
    ),
    (
        "secrets-environment-variables.json",
        Valid("secrets-integration", 1),
    ),
    ("sysctl.json", Valid("ecsftest-sysctl", 1)),
    (
        "task-efs-vol-write.json",
        Invalid(&["volumes[0].efsVolumeConfiguration: EFS volumes are not supported"]),
    ),
    ("task-shared-vol-write.json", Valid("ecsftest-task-local-volume", 1)),
    ("tmpfs.json", Valid("ecsftest-tmpfs", 1)),
];

/// The valid fixtures that `skiff run` runs end to end, by the suite that runs them (with the
/// test registry's images standing in) and checks that they do what their names say.
const RUN: &[(&str, &str)] = &[
    ("add-drop-capabilities.json", "runtime.rs"),
    ("nofiles-ulimit.json", "runtime.rs"),
    ("init-process.json", "runtime.rs"),
    ("tmpfs.json", "runtime.rs"),
    ("sysctl.json", "runtime.rs"),
    ("devices.json", "runtime.rs"),
    ("busybox-port-5180.json", "net.rs"),
    ("network-link.json", "net.rs"),
    ("datavolume.json", "volumes.rs"),
    ("task-shared-vol-write.json", "volumes.rs"),
    ("aws-cli-ex3-web-timer-volumes.json", "volumes.rs"),
    ("container-ordering-healthy.json", "health.rs"),
];

#[test]
fn fixtures_said_to_run_are_valid_and_named_by_their_suite() {
    for (name, suite) in RUN {
        assert!(
            TABLE
                .iter()
                .any(|(n, e)| n == name && matches!(e, Valid(..))),
            "{name} runs but is not a valid fixture of TABLE"
        );
        let src = std::fs::read_to_string(format!("{}/tests/{suite}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        let stem = name.trim_end_matches(".json");
        assert!(
            src.contains(&format!("\"{stem}\"")),
            "tests/{suite} does not name {stem}"
        );
    }
}

fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("validate")
        .args(args)
        .env_remove("SKIFF_LOG")
        .output()
        .expect("run skiff")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("skiff-taskdef-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, json: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, json).unwrap();
    p.display().to_string()
}

#[test]
fn every_fixture_has_its_expected_outcome() {
    let mut files: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    for f in &files {
        assert!(
            TABLE.iter().any(|(n, _)| n == f),
            "fixture {f} has no entry in TABLE: add what skiff validate must say of it"
        );
    }
    for (name, expect) in TABLE {
        assert!(
            files.contains(&name.to_string()),
            "TABLE names {name}, which is not a fixture"
        );
        let path = format!("{FIXTURES}/{name}");
        let out = validate(&[&path]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        match expect {
            Valid(family, n) => {
                let noun = if *n == 1 { "container" } else { "containers" };
                assert_eq!(
                    (out.status.code(), stdout.as_str(), stderr.as_str()),
                    (
                        Some(0),
                        format!("{path}: valid (family {family}, {n} {noun})\n").as_str(),
                        ""
                    ),
                    "{name}"
                );
            }
            Invalid(want) => {
                assert_eq!(out.status.code(), Some(1), "{name}: {stdout}{stderr}");
                assert_eq!(stdout, "", "{name}");
                let lines: Vec<&str> = stderr.lines().collect();
                assert_eq!(lines.len(), want.len(), "{name}: {stderr}");
                for (line, w) in lines.iter().zip(want.iter()) {
                    assert!(
                        line.starts_with(&format!("{path}: {w}")),
                        "{name}: expected {w:?}, got {line:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn several_files_at_once() {
    let valid = format!("{FIXTURES}/tmpfs.json");
    let invalid = format!("{FIXTURES}/nvidia-gpu.json");
    let out = validate(&[&valid, &invalid, "/nonexistent/task.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        format!("{valid}: valid (family ecsftest-tmpfs, 1 container)\n")
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{invalid}: containerDefinitions[0].resourceRequirements[0].type"
        )),
        "{err}"
    );
    assert!(
        err.contains("/nonexistent/task.json: No such file"),
        "{err}"
    );
}

#[test]
fn the_three_forms_and_the_describe_wrapper() {
    let dir = scratch("forms");
    let container = r#"{"name":"app","image":"busybox","memory":32}"#;
    let full = write(
        &dir,
        "full.json",
        &format!(
            r#"{{"family":"full","networkMode":"none","containerDefinitions":[{container}]}}"#
        ),
    );
    let cli_input = write(
        &dir,
        "cli.json",
        &format!(
            r#"{{"family":"cli","taskRoleArn":"","executionRoleArn":"arn:aws:iam::1:role/x",
                "requiresCompatibilities":["EXTERNAL"],"tags":[{{"key":"team","value":"edge"}}],
                "containerDefinitions":[{container}]}}"#
        ),
    );
    let bare = write(
        &dir,
        "my app.v2.json",
        &format!("[{container},{}]", container.replace("app", "side")),
    );
    let described = write(
        &dir,
        "described.json",
        &format!(
            r#"{{"taskDefinition":{{"taskDefinitionArn":"arn:aws:ecs:eu-west-1:1:task-definition/desc:7",
                "family":"desc","revision":7,"status":"ACTIVE","compatibilities":["EC2","EXTERNAL"],
                "requiresAttributes":[],"registeredAt":"2024-05-01T10:00:00.000Z","registeredBy":"arn:aws:iam::1:root",
                "placementConstraints":[],"volumes":[],"containerDefinitions":[{container}]}},
                "tags":[]}}"#
        ),
    );
    let out = validate(&[&full, &cli_input, &bare, &described]);
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (
            Some(0),
            format!(
                "{full}: valid (family full, 1 container)\n\
                 {cli_input}: valid (family cli, 1 container)\n\
                 {bare}: valid (family my-app-v2, 2 containers)\n\
                 {described}: valid (family desc, 1 container)\n"
            ),
            String::new()
        )
    );
    // --family names a bare array's family, and wins over a file's own.
    let out = validate(&["--family", "given", &bare, &full]);
    assert_eq!(
        text(&out.stdout),
        format!(
            "{bare}: valid (family given, 2 containers)\n{full}: valid (family given, 1 container)\n"
        )
    );
    let out = validate(&["--family", "not valid", &bare]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("{bare}: family: \"not valid\" is not valid (1-255 letters, digits, '_' or '-')\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unit_strings_of_task_cpu_and_memory() {
    let dir = scratch("units");
    for (i, (cpu, memory)) in [
        (r#""256""#, r#""512""#),
        ("256", "512"),
        (r#""0.25 vCPU""#, r#""1 GB""#),
        (r#""1 vCPU""#, r#""2GB""#),
    ]
    .into_iter()
    .enumerate()
    {
        let f = write(
            &dir,
            &format!("u{i}.json"),
            &format!(
                r#"{{"family":"u","cpu":{cpu},"memory":{memory},"containerDefinitions":[{{"name":"a","image":"i","cpu":256,"memory":512}}]}}"#
            ),
        );
        let out = validate(&[&f]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{cpu} {memory}: {}",
            text(&out.stderr)
        );
    }
    let f = write(
        &dir,
        "bad.json",
        r#"{"family":"u","cpu":"lots","memory":"1 TB","containerDefinitions":[{"name":"a","image":"i"}]}"#,
    );
    let out = validate(&[&f]);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{f}: cpu: invalid cpu value \"lots\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}: memory: invalid memory value \"1 TB\"")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_error_at_once_with_its_path() {
    let dir = scratch("errors");
    let f = write(
        &dir,
        "bad.json",
        r#"{"family":"bad","networkMode":"awsvpc","containerDefinitions":[
            {"name":"web","image":"nginx","memory":64,"hostname":"web",
             "portMappings":[{"containerPort":8080,"hostPort":80}],"links":["db"]},
            {"name":"db","image":"postgres","memory":64,"memoryReservation":128,"essential":false,
             "dependsOn":[{"containerName":"web","condition":"SUCCESS"}],
             "healthCheck":{"command":["CMD-SHELL","pg_isready"],"interval":1},
             "mountPoints":[{"sourceVolume":"data","containerPath":"/var/lib/postgresql"}],
             "foo":1}]}"#,
    );
    let out = validate(&[&f]);
    assert_eq!(out.status.code(), Some(1));
    let mut got: Vec<String> = text(&out.stderr).lines().map(str::to_string).collect();
    got.sort();
    let mut want: Vec<String> = [
        "containerDefinitions[0].hostname: cannot be used in awsvpc network mode",
        "containerDefinitions[0].portMappings[0].hostPort: must equal containerPort (8080) in awsvpc network mode, not 80",
        "containerDefinitions[0].links: only in bridge network mode (this task uses awsvpc)",
        "containerDefinitions[1].memoryReservation: 128 MiB must be less than memory (64 MiB)",
        "containerDefinitions[1].healthCheck.interval: must be a whole number from 5 to 300, got 1",
        "containerDefinitions[1].foo: unknown field",
        "containerDefinitions[1].dependsOn[0].condition: SUCCESS cannot target \"web\", an essential container",
        "containerDefinitions[1].mountPoints[0].sourceVolume: \"data\" is not a volume of this task",
        "containerDefinitions: dependsOn, links and volumesFrom form a cycle: web -> db -> web",
    ]
    .iter()
    .map(|e| format!("{f}: {e}"))
    .collect();
    want.sort();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lenient_mode_warns_about_unknown_keys() {
    let dir = scratch("lenient");
    let f = write(
        &dir,
        "t.json",
        r#"{"family":"t","futureTaskField":true,"containerDefinitions":[
            {"name":"a","image":"i","memory":16,"futureContainerField":{"x":1}}]}"#,
    );
    let out = validate(&[&f]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{f}: futureTaskField: unknown field\n{f}: containerDefinitions[0].futureContainerField: unknown field\n"
        )
    );
    let out = validate(&["--lenient", &f]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("{f}: valid (family t, 1 container)\n")
    );
    assert_eq!(
        text(&out.stderr),
        format!(
            "warning: {f}: futureTaskField: unknown field (ignored)\n\
             warning: {f}: containerDefinitions[0].futureContainerField: unknown field (ignored)\n"
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn limits_of_size_and_containers() {
    let dir = scratch("limits");
    let containers = |n: usize| -> String {
        let list: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"name":"c{i}","image":"i","memory":8}}"#))
            .collect();
        format!(
            r#"{{"family":"many","containerDefinitions":[{}]}}"#,
            list.join(",")
        )
    };
    let ten = write(&dir, "ten.json", &containers(10));
    let eleven = write(&dir, "eleven.json", &containers(11));
    let out = validate(&[&ten, &eleven]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        format!("{ten}: valid (family many, 10 containers)\n")
    );
    assert_eq!(
        text(&out.stderr),
        format!("{eleven}: containerDefinitions: holds 11 containers; at most 10 are allowed\n")
    );

    // 64 KiB of compact JSON; indentation does not count.
    let sized = |size: usize| -> String {
        let head = r#"{"family":"big","containerDefinitions":[{"name":"a","image":"i","memory":8,"command":[""#;
        let tail = r#""]}]}"#;
        format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len()))
    };
    let at_limit = sized(65536);
    let pretty = write(
        &dir,
        "pretty.json",
        &serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&at_limit).unwrap(),
        )
        .unwrap(),
    );
    let over = write(&dir, "over.json", &sized(65537));
    let out = validate(&[&pretty, &over]);
    assert_eq!(
        text(&out.stdout),
        format!("{pretty}: valid (family big, 1 container)\n")
    );
    assert_eq!(
        text(&out.stderr),
        format!("{over}: (root): the task definition is 65537 bytes as compact JSON; ECS registers at most 65536 (64 KiB)\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broken_json_and_usage() {
    let dir = scratch("broken");
    let f = write(&dir, "broken.json", r#"{"family": "x", "#);
    let out = validate(&[&f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("{f}: not valid JSON: ")),
        "{}",
        text(&out.stderr)
    );
    // No file: a usage error.
    let out = validate(&[]);
    assert_ne!(out.status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
