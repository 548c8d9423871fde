//! `[provision]`: self-service provisioning (the form, the image per edge, the IT contact's email).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionConfig {
    /// The enrollment API as the new box reaches it, e.g. `https://hub.us-east.example:8443`.
    pub hub_url: String,
    /// PEM of the CA that signed the enrollment API's certificate; copied onto the image.
    pub ca_cert: PathBuf,
    /// The dashboard's address as people outside reach it; the links in the IT contact's email.
    pub public_url: String,
    /// One golden image per hardware size (`small`, `medium`, `large`), built by image-builder.
    /// Each edge's image is a copy with its config written onto the boot partition.
    pub base_images: BTreeMap<String, PathBuf>,
    /// Where each edge's image is written (a directory per facility). Default
    /// `/var/lib/agog-hub/images`.
    #[serde(default = "default_images_dir")]
    pub images_dir: PathBuf,
    /// The folder on the boot (FAT) partition holding `edge.toml` and the hub's CA.
    #[serde(default = "default_boot_dir")]
    pub boot_config_dir: String,
    /// Where the box mounts its boot partition, per size (the CA's path in edge.toml). Default:
    /// `/boot/firmware` for small (Raspberry Pi), `/boot/efi` otherwise.
    #[serde(default)]
    pub boot_mount: BTreeMap<String, String>,
    /// Hardware orders go here as a JSON POST. None: no order is sent (the page says so).
    pub procurement_webhook: Option<String>,
    /// Bootstrap tokens made for provisioned edges expire after this many days. Default 30.
    #[serde(default = "default_token_days")]
    pub token_days: u32,
    /// An edge not enrolled this many days after its image was ready raises an alert. Default 7.
    #[serde(default = "default_alert_days")]
    pub not_enrolled_alert_days: f64,
    /// Retries of the hardware order and the email before they are marked failed. Default 8.
    #[serde(default = "default_attempts")]
    pub max_attempts: i32,
    /// xz level of each edge's `.img.xz` (0-9). Default 3: the 1.9 GB medium image becomes
    /// 177 MiB in about 2 minutes of two cores (level 6: 166 MiB in 7 minutes).
    #[serde(default = "default_xz_level")]
    pub xz_level: u8,
    /// How often the job loop looks for work. Default 2 s.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_images_dir() -> PathBuf {
    "/var/lib/agog-hub/images".into()
}
fn default_boot_dir() -> String {
    "agog".into()
}
fn default_token_days() -> u32 {
    30
}
fn default_alert_days() -> f64 {
    7.0
}
fn default_attempts() -> i32 {
    8
}
fn default_xz_level() -> u8 {
    3
}
fn default_poll_ms() -> u64 {
    2000
}

pub const SIZES: [&str; 3] = ["small", "medium", "large"];

impl ProvisionConfig {
    pub fn validate(&self) -> Result<(), String> {
        for url in [&self.hub_url, &self.public_url] {
            let u: reqwest::Url = url
                .parse()
                .map_err(|e| format!("[provision] {url:?} is not a URL: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!("[provision] {url:?}: http or https only"));
            }
        }
        if !self.hub_url.starts_with("https://") {
            return Err("[provision] hub_url: the enrollment API is HTTPS only".into());
        }
        for size in self.base_images.keys() {
            if !SIZES.contains(&size.as_str()) {
                return Err(format!(
                    "[provision] base_images: {size:?} is not a hardware size (small, medium, large)"
                ));
            }
        }
        if self.boot_config_dir.is_empty()
            || !self
                .boot_config_dir
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("[provision] boot_config_dir: letters, digits, - and _ only".into());
        }
        if let Some(w) = &self.procurement_webhook {
            w.parse::<reqwest::Url>()
                .map_err(|e| format!("[provision] procurement_webhook {w:?}: {e}"))?;
        }
        if self.xz_level > 9 {
            return Err(format!(
                "[provision] xz_level {}: 0 (fastest) to 9",
                self.xz_level
            ));
        }
        if self.max_attempts < 1 || self.not_enrolled_alert_days <= 0.0 {
            return Err(
                "[provision] max_attempts and not_enrolled_alert_days must be positive".into(),
            );
        }
        Ok(())
    }

    /// Where the box mounts its boot partition.
    pub fn boot_mount(&self, size: &str) -> String {
        self.boot_mount.get(size).cloned().unwrap_or_else(|| {
            if size == "small" {
                "/boot/firmware".into()
            } else {
                "/boot/efi".into()
            }
        })
    }
}
