//! `skiff ctl`: the control plane's ECS API from the shell, verbs and JSON after `aws ecs`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::proto::{ErrorBody, ECS_TARGET_PREFIX};

/// Exit codes as `aws` has them: 254 when the service refused the request, 255 when the
/// request could not be made (bad input, unreachable server, TLS).
pub const EXIT_SERVICE_ERROR: i32 = 254;
pub const EXIT_CLIENT_ERROR: i32 = 255;

#[derive(Args)]
pub struct CtlArgs {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "SKIFF_ENDPOINT",
        default_value = "https://localhost:8443"
    )]
    endpoint: String,
    /// The CA certificate (PEM) to trust the server with.
    #[arg(long, global = true, env = "SKIFF_CA_FILE")]
    ca: Option<PathBuf>,
    /// The admin token.
    #[arg(long, global = true, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// On the server's host: take the CA and the admin token from its data directory.
    #[arg(long, global = true, env = "SKIFF_SERVER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub(super) enum Verb {
    CreateCluster {
        #[arg(long)]
        cluster_name: Option<String>,
    },
    ListClusters,
    DescribeClusters {
        #[arg(long, num_args = 1..)]
        clusters: Vec<String>,
    },
    DeleteCluster {
        #[arg(long)]
        cluster: String,
    },
    /// --cli-input-json file://PATH (or the JSON itself), as `aws ecs` takes it.
    RegisterTaskDefinition {
        #[arg(long)]
        cli_input_json: String,
    },
    DescribeTaskDefinition {
        #[arg(long)]
        task_definition: String,
    },
    ListTaskDefinitions {
        #[arg(long)]
        family_prefix: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    DeregisterTaskDefinition {
        #[arg(long)]
        task_definition: String,
    },
    RunTask {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        task_definition: String,
        #[arg(long)]
        count: Option<u32>,
        #[arg(long)]
        started_by: Option<String>,
        #[arg(long)]
        group: Option<String>,
    },
    StartTask {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        task_definition: String,
        #[arg(long, num_args = 1.., required = true)]
        container_instances: Vec<String>,
        #[arg(long)]
        started_by: Option<String>,
        #[arg(long)]
        group: Option<String>,
    },
    StopTask {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        task: String,
        #[arg(long)]
        reason: Option<String>,
    },
    DescribeTasks {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, num_args = 1.., required = true)]
        tasks: Vec<String>,
    },
    ListTasks {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        container_instance: Option<String>,
        #[arg(long)]
        family: Option<String>,
        #[arg(long)]
        desired_status: Option<String>,
        #[arg(long)]
        started_by: Option<String>,
    },
    ListContainerInstances {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    DescribeContainerInstances {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, num_args = 1.., required = true)]
        container_instances: Vec<String>,
    },
    UpdateContainerInstancesState {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, num_args = 1.., required = true)]
        container_instances: Vec<String>,
        #[arg(long)]
        status: String,
    },
    DeregisterContainerInstance {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        container_instance: String,
        #[arg(long)]
        force: bool,
    },
    /// A join token for agents of a cluster (skiff's own action).
    CreateJoinToken {
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Utilization windows of an instance and/or tasks (skiff's own action).
    GetUtilization {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        container_instance: Option<String>,
        #[arg(long, num_args = 1..)]
        tasks: Vec<String>,
    },
}

/// The request body with the absent options left out, as `aws` sends it.
fn body(pairs: &[(&str, Value)]) -> Value {
    let mut o = serde_json::Map::new();
    for (k, v) in pairs {
        if !v.is_null() && v.as_array().map_or(true, |a| !a.is_empty()) {
            o.insert((*k).to_string(), v.clone());
        }
    }
    Value::Object(o)
}

fn request(verb: &Verb) -> anyhow::Result<(&'static str, Value)> {
    use Verb::*;
    Ok(match verb {
        CreateCluster { cluster_name } => (
            "CreateCluster",
            body(&[("clusterName", json!(cluster_name))]),
        ),
        ListClusters => ("ListClusters", json!({})),
        DescribeClusters { clusters } => {
            ("DescribeClusters", body(&[("clusters", json!(clusters))]))
        }
        DeleteCluster { cluster } => ("DeleteCluster", json!({"cluster": cluster})),
        RegisterTaskDefinition { cli_input_json } => {
            let text = match cli_input_json.strip_prefix("file://") {
                Some(p) => {
                    std::fs::read_to_string(p).with_context(|| format!("--cli-input-json: {p}"))?
                }
                None => cli_input_json.clone(),
            };
            let v: Value =
                serde_json::from_str(&text).context("--cli-input-json: not valid JSON")?;
            ("RegisterTaskDefinition", v)
        }
        DescribeTaskDefinition { task_definition } => (
            "DescribeTaskDefinition",
            json!({"taskDefinition": task_definition}),
        ),
        ListTaskDefinitions {
            family_prefix,
            status,
        } => (
            "ListTaskDefinitions",
            body(&[
                ("familyPrefix", json!(family_prefix)),
                ("status", json!(status)),
            ]),
        ),
        DeregisterTaskDefinition { task_definition } => (
            "DeregisterTaskDefinition",
            json!({"taskDefinition": task_definition}),
        ),
        RunTask {
            cluster,
            task_definition,
            count,
            started_by,
            group,
        } => (
            "RunTask",
            body(&[
                ("cluster", json!(cluster)),
                ("taskDefinition", json!(task_definition)),
                ("count", json!(count)),
                ("startedBy", json!(started_by)),
                ("group", json!(group)),
            ]),
        ),
        StartTask {
            cluster,
            task_definition,
            container_instances,
            started_by,
            group,
        } => (
            "StartTask",
            body(&[
                ("cluster", json!(cluster)),
                ("taskDefinition", json!(task_definition)),
                ("containerInstances", json!(container_instances)),
                ("startedBy", json!(started_by)),
                ("group", json!(group)),
            ]),
        ),
        StopTask {
            cluster,
            task,
            reason,
        } => (
            "StopTask",
            body(&[
                ("cluster", json!(cluster)),
                ("task", json!(task)),
                ("reason", json!(reason)),
            ]),
        ),
        DescribeTasks { cluster, tasks } => (
            "DescribeTasks",
            body(&[("cluster", json!(cluster)), ("tasks", json!(tasks))]),
        ),
        ListTasks {
            cluster,
            container_instance,
            family,
            desired_status,
            started_by,
        } => (
            "ListTasks",
            body(&[
                ("cluster", json!(cluster)),
                ("containerInstance", json!(container_instance)),
                ("family", json!(family)),
                ("desiredStatus", json!(desired_status)),
                ("startedBy", json!(started_by)),
            ]),
        ),
        ListContainerInstances { cluster, status } => (
            "ListContainerInstances",
            body(&[("cluster", json!(cluster)), ("status", json!(status))]),
        ),
        DescribeContainerInstances {
            cluster,
            container_instances,
        } => (
            "DescribeContainerInstances",
            body(&[
                ("cluster", json!(cluster)),
                ("containerInstances", json!(container_instances)),
            ]),
        ),
        UpdateContainerInstancesState {
            cluster,
            container_instances,
            status,
        } => (
            "UpdateContainerInstancesState",
            body(&[
                ("cluster", json!(cluster)),
                ("containerInstances", json!(container_instances)),
                ("status", json!(status)),
            ]),
        ),
        DeregisterContainerInstance {
            cluster,
            container_instance,
            force,
        } => (
            "DeregisterContainerInstance",
            body(&[
                ("cluster", json!(cluster)),
                ("containerInstance", json!(container_instance)),
                ("force", json!(force)),
            ]),
        ),
        CreateJoinToken { cluster } => ("CreateJoinToken", body(&[("cluster", json!(cluster))])),
        GetUtilization {
            cluster,
            container_instance,
            tasks,
        } => (
            "GetUtilization",
            body(&[
                ("cluster", json!(cluster)),
                ("containerInstance", json!(container_instance)),
                ("tasks", json!(tasks)),
            ]),
        ),
    })
}

/// The client's settings: --ca/--token over the data directory's files.
fn client(args: &CtlArgs) -> anyhow::Result<(reqwest::Client, String)> {
    let ca = args
        .ca
        .clone()
        .or_else(|| args.data_dir.as_ref().map(|d| d.join("ca.pem")));
    let token = match (&args.token, &args.data_dir) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) => std::fs::read_to_string(d.join("admin.token"))
            .with_context(|| format!("{}", d.join("admin.token").display()))?
            .trim()
            .to_string(),
        (None, None) => bail!("no admin token: give --token, SKIFF_TOKEN or --data-dir"),
    };
    let mut b = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .http1_only();
    if let Some(ca) = ca {
        let pem = std::fs::read(&ca).with_context(|| format!("--ca {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("--ca {}: not a PEM certificate", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    Ok((b.build()?, token))
}

pub async fn run(args: CtlArgs) -> i32 {
    match call(&args).await {
        Ok(v) => {
            if args.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", super::ctl_table::table(&args.verb, &v));
            }
            0
        }
        Err(CallError::Service(action, e)) => {
            eprintln!(
                "An error occurred ({}) when calling the {action} operation: {}",
                e.kind, e.message
            );
            EXIT_SERVICE_ERROR
        }
        Err(CallError::Client(e)) => {
            eprintln!("skiff ctl: {e:#}");
            EXIT_CLIENT_ERROR
        }
    }
}

enum CallError {
    Service(&'static str, ErrorBody),
    Client(anyhow::Error),
}

impl From<anyhow::Error> for CallError {
    fn from(e: anyhow::Error) -> CallError {
        CallError::Client(e)
    }
}

async fn call(args: &CtlArgs) -> Result<Value, CallError> {
    let (action, req) = request(&args.verb)?;
    let (client, token) = client(args)?;
    let url = format!("{}/", args.endpoint.trim_end_matches('/'));
    let resp = client
        .post(&url)
        .header("x-amz-target", format!("{ECS_TARGET_PREFIX}{action}"))
        .header("content-type", "application/x-amz-json-1.1")
        .bearer_auth(token)
        .body(req.to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let text = resp.text().await.context("reading the answer")?;
    if !status.is_success() {
        let e: ErrorBody = serde_json::from_str(&text)
            .map_err(|_| anyhow!("{url}: HTTP {status}: {}", text.trim()))?;
        return Err(CallError::Service(action, e));
    }
    Ok(serde_json::from_str(&text).map_err(|e| anyhow!("{url}: answer is not JSON: {e}"))?)
}
