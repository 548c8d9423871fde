//! Connections to a node's database.

use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

/// Used when a connection string sets no `connect_timeout`: a half-dead peer must not stall
/// a reconcile or a probe.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect and drive the connection in the background. The connection task ends when the
/// client is dropped.
pub async fn connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: Config = conninfo.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    config.application_name("agog-reconciler");
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}
