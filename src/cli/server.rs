//! `skiff server`: the control plane.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::control::{serve, ServerOptions};

#[derive(Args)]
pub struct ServerArgs {
    /// Where the store, the certificates and the tokens live.
    #[arg(
        long,
        env = "SKIFF_SERVER_DATA_DIR",
        default_value = "/var/lib/skiff-server"
    )]
    data_dir: PathBuf,
    /// Address to listen on (HOST:PORT; port 0 picks a free one, printed at start).
    #[arg(long, env = "SKIFF_SERVER_LISTEN", default_value = "0.0.0.0:8443")]
    listen: String,
    /// Server certificate chain (PEM); without it a CA and a certificate are made in the data
    /// directory on first start.
    #[arg(long, env = "SKIFF_SERVER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "SKIFF_SERVER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// More names or addresses for the generated certificate (repeat; first start only).
    #[arg(long = "tls-san", env = "SKIFF_SERVER_TLS_SANS", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// Heartbeat timeout's base: an instance not polling for longer than this plus 10 ms per
    /// instance of the fleet shows agentConnected=false.
    #[arg(long, env = "SKIFF_SERVER_HEARTBEAT_TIMEOUT", default_value = "60s",
          value_parser = super::tasks::parse_duration)]
    heartbeat_timeout: Duration,
}

pub async fn run(args: ServerArgs) -> i32 {
    let opts = ServerOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_sans: args.tls_sans,
        heartbeat_timeout: args.heartbeat_timeout,
    };
    match serve(opts).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff server: {e}");
            1
        }
    }
}
