//! An edge box on this machine: the real `edge-agent` binary as a process, with its own
//! PostgreSQL data directory (empty at first), config, port and `/health` address.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{cluster, process, wait_until};

pub struct EdgeBox {
    pub name: String,
    pub dir: PathBuf,
    pub pg_port: u16,
    pub health_port: u16,
    pub replication_role: String,
    pub replication_password: String,
    child: Option<Child>,
    /// Left running with its directory when dropped (the lab's boxes).
    keep: bool,
    /// The network namespace the agent runs in (`None`: this one).
    netns: Option<String>,
}

pub struct EdgeBoxConfig<'a> {
    pub node: &'a str,
    pub facility: &'a str,
    pub tenant: &'a str,
    pub region: &'a str,
    pub regional_node: &'a str,
    pub master_node: &'a str,
    pub master_conninfo: String,
    pub reconcile_secs: u64,
}

/// A box that enrolls with a hub instead of being configured by hand (`[enroll]`, no
/// `[upstream]`).
pub struct EnrollingBoxConfig<'a> {
    pub node: &'a str,
    pub facility: &'a str,
    pub tenant: &'a str,
    pub region: &'a str,
    /// `https://127.0.0.1:<port>`
    pub hub_url: String,
    pub token: String,
    /// PEM file of the hub's CA.
    pub ca_cert: PathBuf,
    pub reconcile_secs: u64,
}

impl EdgeBox {
    /// Write the config; nothing runs yet.
    pub fn new(c: &EdgeBoxConfig) -> Result<EdgeBox> {
        let dir = cluster::scratch_dir(&format!("box-{}", c.node))?;
        let replication_password = format!("pw-{}-{}", c.node, std::process::id());
        let pw_file = dir.join("replication.password");
        fs::write(&pw_file, &replication_password)?;
        fs::set_permissions(&pw_file, fs::Permissions::from_mode(0o600))?;
        let upstream = format!(
            r#"[upstream]
regional_node = "{regional}"
regional_address = "127.0.0.1"
master_node = "{master}"
master_conninfo = "{master_conninfo}"
replication_password_file = "{pw}"
"#,
            regional = c.regional_node,
            master = c.master_node,
            master_conninfo = c.master_conninfo,
            pw = pw_file.display(),
        );
        Self::write(
            dir,
            c.node,
            c.facility,
            c.tenant,
            c.region,
            c.reconcile_secs,
            &upstream,
            replication_password,
        )
    }

    /// A box with an `[enroll]` section: `run` enrolls with the hub first. Its enrollment
    /// state goes to `<dir>/state`.
    pub fn new_enrolling(c: &EnrollingBoxConfig) -> Result<EdgeBox> {
        Self::new_enrolling_in(cluster::scratch_dir(&format!("box-{}", c.node))?, c)
    }

    /// An enrolling box in `dir` (the lab's boxes live in the lab's directory, not with the
    /// tests' scratch directories).
    pub fn new_enrolling_in(dir: PathBuf, c: &EnrollingBoxConfig) -> Result<EdgeBox> {
        cluster::owned_dir(&dir)?;
        let enroll = format!(
            r#"[enroll]
hub_url = "{hub}"
bootstrap_token = "{token}"
ca_cert = "{ca}"
state_dir = "{dir}/state"
advertise_host = "127.0.0.1"
"#,
            hub = c.hub_url,
            token = c.token,
            ca = c.ca_cert.display(),
            dir = dir.display(),
        );
        // The password is chosen by the agent at enrollment (see `state_dir`).
        Self::write(
            dir,
            c.node,
            c.facility,
            c.tenant,
            c.region,
            c.reconcile_secs,
            &enroll,
            String::new(),
        )
    }

    /// Where an enrolling box keeps its enrollment.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        dir: PathBuf,
        node: &str,
        facility: &str,
        tenant: &str,
        region: &str,
        reconcile_secs: u64,
        tail: &str,
        replication_password: String,
    ) -> Result<EdgeBox> {
        let pg_port = cluster::free_port()?;
        let health_port = cluster::free_port()?;
        let replication_role = "agog_replication".to_string();
        let root = unsafe { libc::geteuid() } == 0;
        let os_user = if root {
            cluster::pg_user()
        } else {
            std::env::var("USER").unwrap_or_default()
        };
        let config = format!(
            r#"facility = "{facility}"
tenant = "{tenant}"
region = "{region}"
node = "{node}"

[postgres]
bin_dir = "{bin}"
data_dir = "{dir}/pgdata"
socket_dir = "{dir}/sock"
os_user = "{os_user}"
port = {pg_port}
wal_keep_mb = 64
settings = {{ fsync = "off", full_page_writes = "off", shared_buffers = "32MB" }}

[health]
listen = "127.0.0.1:{health_port}"
probe_interval_secs = 1
probe_timeout_ms = 1000

[reconcile]
interval_secs = {reconcile}
heartbeat_secs = 1

{tail}"#,
            bin = cluster::pg_bin().display(),
            dir = dir.display(),
            reconcile = reconcile_secs,
        );
        fs::write(dir.join("edge.toml"), config)?;
        Ok(EdgeBox {
            name: node.to_string(),
            dir,
            pg_port,
            health_port,
            replication_role,
            replication_password,
            child: None,
            keep: false,
            netns: None,
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("edge.toml")
    }

    /// Change a line of the written config before the agent starts (e.g. a smaller WAL bound).
    pub fn edit_config(&self, from: &str, to: &str) -> Result<()> {
        let text = fs::read_to_string(self.config_path())?;
        anyhow::ensure!(text.contains(from), "config has no {from:?}");
        fs::write(self.config_path(), text.replace(from, to))?;
        Ok(())
    }

    /// Start `edge-agent run` in a session of its own and leave it (and the box directory)
    /// when this value is dropped: the lab's boxes outlive the command that started them.
    /// Returns the agent's pid.
    pub fn start_detached(&mut self) -> Result<u32> {
        let child = process::spawn(
            "edge-agent",
            &self.config_path(),
            "run",
            &self.dir.join("agent.log"),
            true,
        )?;
        self.keep = true;
        Ok(child.id())
    }

    /// Start `edge-agent run`; its log goes to `agent.log` in the box directory.
    pub fn start(&mut self) -> Result<()> {
        self.child = Some(process::spawn_in(
            "edge-agent",
            &self.config_path(),
            "run",
            &self.dir.join("agent.log"),
            false,
            self.netns.as_deref(),
        )?);
        Ok(())
    }

    /// Run the agent (and so its PostgreSQL and tunnel) and its CLI in network namespace
    /// `netns`: `/health` listens on every address there.
    pub fn set_netns(&mut self, netns: &str) -> Result<()> {
        self.edit_config(
            &format!("listen = \"127.0.0.1:{}\"", self.health_port),
            &format!("listen = \"0.0.0.0:{}\"", self.health_port),
        )?;
        self.netns = Some(netns.to_string());
        Ok(())
    }

    /// Add a section (e.g. `[tunnel]`) to the config before the agent starts.
    pub fn append_config(&self, text: &str) -> Result<()> {
        let mut t = fs::read_to_string(self.config_path())?;
        t.push('\n');
        t.push_str(text);
        fs::write(self.config_path(), t)?;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL the agent (its PostgreSQL keeps running, as after a real crash).
    pub fn kill(&mut self) {
        process::kill(&mut self.child);
    }

    /// SIGTERM and wait: the agent stops its PostgreSQL.
    pub fn stop(&mut self) -> Result<()> {
        anyhow::ensure!(
            process::stop(&mut self.child, Duration::from_secs(30))?,
            "edge-agent did not stop within 30 s"
        );
        Ok(())
    }

    /// Run a CLI command of the agent against this box's config; (exit code, stdout).
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String)> {
        let out = match &self.netns {
            Some(ns) => process::cli_in(ns, "edge-agent", &self.config_path(), args)?,
            None => process::cli("edge-agent", &self.config_path(), args)?,
        };
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The PostgreSQL server's pid, from its postmaster.pid.
    pub fn postgres_pid(&self) -> Option<i32> {
        fs::read_to_string(self.dir.join("pgdata/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Superuser connection over the private socket (root reaches it; so does the server user).
    pub fn superuser_conninfo(&self) -> String {
        format!(
            "host={}/sock port={} dbname=agog user=postgres",
            self.dir.display(),
            self.pg_port
        )
    }

    /// What the regional uses to subscribe: the replication role over TCP.
    pub fn replication_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=agog user={} password={}",
            self.pg_port, self.replication_role, self.replication_password
        )
    }

    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        sync_core::connect(&self.superuser_conninfo())
            .await
            .with_context(|| format!("connect to edge {}", self.name))
    }

    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.health_port)
    }

    /// GET /health: (HTTP status, JSON body).
    pub async fn health(&self) -> Result<(u16, serde_json::Value)> {
        let resp = crate::http_client()
            .get(self.health_url())
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        let code = resp.status().as_u16();
        Ok((code, resp.json().await?))
    }

    /// Wait until /health has the given status string.
    pub async fn wait_status(&self, want: &str, timeout: Duration) -> Result<serde_json::Value> {
        let last = std::cell::RefCell::new(String::new());
        let r = wait_until(
            &format!("{} /health {want}", self.name),
            timeout,
            || async {
                let (_, body) = self.health().await?;
                *last.borrow_mut() = body.to_string();
                Ok((body["status"] == want).then_some(body))
            },
        )
        .await;
        r.map_err(|e| {
            e.context(format!(
                "last /health: {}\n--- agent log (tail) ---\n{}",
                last.borrow(),
                tail(&self.log(), 40)
            ))
        })
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for EdgeBox {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if std::thread::panicking() || std::env::var_os("AGOG_KEEP_LOGS").is_some() {
            // Keep the agent's log (PostgreSQL's log is in it) for the post-mortem.
            let keep = PathBuf::from("/tmp/agog-failed");
            let _ = fs::create_dir_all(&keep);
            let _ = fs::copy(
                self.dir.join("agent.log"),
                keep.join(format!("agent-{}-{}.log", self.name, self.pg_port)),
            );
        }
        let _ = self.stop();
        // A server orphaned by a killed agent.
        if let Some(pid) = self.postgres_pid() {
            unsafe { libc::kill(pid, libc::SIGQUIT) };
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
