//! Each edge's image: a copy of the golden image for its hardware size (made by image-builder)
//! with the edge's files written onto its boot (FAT) partition, compressed, with its sha256.
//! No loop device and no mount: mtools writes into the partition inside the file, so the hub
//! needs no privilege for it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::config::ProvisionConfig;
use super::request::Provisioned;

pub struct Built {
    /// The `.img.xz`, under `images_dir/<facility>/`.
    pub file: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

/// Run a tool; its stderr in the error, and what to install when it is missing.
async fn run(program: &str, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .await
        .map_err(|e| {
            let package = match program {
                "mmd" | "mcopy" | "mtype" => "mtools",
                "sfdisk" => "fdisk",
                "xz" => "xz-utils",
                _ => "coreutils",
            };
            anyhow::anyhow!("cannot run {program} ({e}): install the {package} package on the hub")
        })?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// GPT's EFI system partition, or an MBR FAT partition (the Raspberry Pi's firmware partition).
const FAT_TYPES: &[&str] = &["C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "c", "b", "e", "ef"];

/// The byte offset of the first FAT partition of a disk image.
pub async fn boot_partition_offset(img: &Path) -> anyhow::Result<u64> {
    let out = run("sfdisk", &["--json", &img.to_string_lossy()]).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&out).context("sfdisk --json printed no JSON")?;
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    table["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["type"]
                .as_str()
                .is_some_and(|t| FAT_TYPES.iter().any(|f| f.eq_ignore_ascii_case(t)))
        })
        .and_then(|p| p["start"].as_u64())
        .map(|start| start * sector)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no FAT boot partition (EFI system or Raspberry Pi firmware)",
                img.display()
            )
        })
}

/// `mtools`' way to name the partition inside the file.
fn inside(img: &Path, offset: u64) -> String {
    format!("{}@@{offset}", img.display())
}

/// Read a file back from the boot partition (tests and the check after writing).
pub async fn read_boot_file(img: &Path, offset: u64, path: &str) -> anyhow::Result<Vec<u8>> {
    run(
        "mtype",
        &["-i", &inside(img, offset), &format!("::/{path}")],
    )
    .await
}

pub async fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&h.finalize()), total))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn file_name(facility: &str) -> String {
    format!("agog-edge-{facility}.img.xz")
}

/// Build the edge's image; `progress` is told each step.
pub async fn build(
    cfg: &ProvisionConfig,
    p: &Provisioned,
    progress: &(dyn Fn(String) + Sync),
) -> anyhow::Result<Built> {
    let base = cfg.base_images.get(&p.hardware_size).ok_or_else(|| {
        anyhow::anyhow!(
            "no golden image for size {}: build one with image-builder and set [provision] base_images.{}",
            p.hardware_size,
            p.hardware_size
        )
    })?;
    anyhow::ensure!(
        base.is_file(),
        "the golden image {} for size {} is missing: build it with image-builder",
        base.display(),
        p.hardware_size
    );
    let ca = tokio::fs::read(&cfg.ca_cert)
        .await
        .with_context(|| format!("[provision] ca_cert {}", cfg.ca_cert.display()))?;
    let dir = cfg.images_dir.join(&p.facility_id);
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("create {}", dir.display()))?;
    let raw = dir.join(format!("agog-edge-{}.img.partial", p.facility_id));
    let xz = dir.join(file_name(&p.facility_id));
    let xz_partial = dir.join(format!("{}.partial", file_name(&p.facility_id)));

    progress(format!("copying the {} golden image", p.hardware_size));
    run(
        "cp",
        &[
            "--sparse=always",
            &base.to_string_lossy(),
            &raw.to_string_lossy(),
        ],
    )
    .await?;

    progress("writing the edge's config onto the boot partition".into());
    let offset = boot_partition_offset(&raw).await?;
    let at = inside(&raw, offset);
    let folder = format!("::/{}", cfg.boot_config_dir);
    if run("mtype", &["-i", &at, &format!("{folder}/edge.toml")])
        .await
        .is_err()
    {
        // mmd fails when the folder exists (an image made from an edited golden image).
        let _ = run("mmd", &["-i", &at, &folder]).await;
    }
    let staging = tempdir_in(&dir).await?;
    for (name, bytes) in [
        ("edge.toml", p.edge_config.as_bytes()),
        ("10-agog.network", p.network_config.as_bytes()),
        ("hub-ca.pem", &ca[..]),
    ] {
        let local = staging.join(name);
        sync_core::fsutil::write_private(&local, bytes)?;
        run(
            "mcopy",
            &[
                "-o",
                "-i",
                &at,
                &local.to_string_lossy(),
                &format!("{folder}/{name}"),
            ],
        )
        .await?;
        let back = read_boot_file(&raw, offset, &format!("{}/{name}", cfg.boot_config_dir)).await?;
        anyhow::ensure!(
            back == bytes,
            "{name} did not read back from the boot partition as written"
        );
    }
    let _ = tokio::fs::remove_dir_all(&staging).await;

    progress("compressing (xz)".into());
    let compressed = Command::new("xz")
        .args([
            "-T0",
            &format!("-{}", cfg.xz_level),
            "-c",
            &raw.to_string_lossy(),
        ])
        .stdout(std::fs::File::create(&xz_partial)?)
        .status()
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot run xz ({e}): install the xz-utils package on the hub")
        })?;
    anyhow::ensure!(compressed.success(), "xz failed ({compressed})");
    tokio::fs::remove_file(&raw).await?;

    progress("computing the sha256".into());
    let (sha256, bytes) = sha256_file(&xz_partial).await?;
    tokio::fs::rename(&xz_partial, &xz).await?;
    tokio::fs::write(
        dir.join(format!("{}.sha256", file_name(&p.facility_id))),
        format!("{sha256}  {}\n", file_name(&p.facility_id)),
    )
    .await?;
    Ok(Built {
        file: xz,
        sha256,
        bytes,
    })
}

async fn tempdir_in(dir: &Path) -> anyhow::Result<PathBuf> {
    let t = dir.join(format!(".staging-{}", std::process::id()));
    let _ = tokio::fs::remove_dir_all(&t).await;
    tokio::fs::create_dir_all(&t).await?;
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o700)).await?;
    Ok(t)
}
