//! The field journey of a box, with nothing typed into it: an operator submits the
//! provisioning form of a real `hub serve`; the hub writes the edge's config onto a copy of the
//! golden image (built here by `image-builder/build-image --golden` as an unprivileged user) and
//! emails the IT contact; the test follows the email's link, checks the download against the
//! email's sha256, "flashes" it onto a 4 GiB disk and powers it on under software emulation (qemu
//! TCG): the x86_64 `medium` image under qemu-system-x86_64 with OVMF (UEFI, systemd-boot), the
//! Raspberry Pi 4 `small` image under qemu-system-aarch64. The first boot grows the root file
//! system; the agent starts PostgreSQL 16 with pgvector, enrolls,
//! brings up WireGuard with the guest kernel's module to the hub's peer reserved at provisioning,
//! and from then on everything goes through the tunnel: the hub's health checks, the regional's
//! subscription to the box and the box's to the master data.
//!
//! The hub, its regional database, the mail receiver and qemu run in one network namespace of
//! their own: qemu's user networking gives the guest that namespace's loopback as 10.0.2.2 (the
//! enrollment API and the WireGuard port, nothing else), and the hub's wireguard-go interface
//! there routes the tunnel range. No port of the guest is forwarded.
//!
//! qemu has no Raspberry Pi 4 machine with a network: the Pi image boots on qemu's generic `virt`
//! board (a Cortex-A72 like the Pi's), its kernel and initrd taken from the image's firmware
//! partition as the Pi's firmware would, with `cmdline.txt`'s console moved to virt's serial port,
//! and its disk on USB behind a PCI xHCI: the path a Pi 4 boots a USB disk through (xhci-pci,
//! usb-storage, sd_mod in the initramfs).
//!
//! The Debian bases are cached in /var/cache/agog/image-builder (a first run builds them: about
//! 3 minutes more for amd64, 10 for arm64 under qemu-user). qemu and the temporary files go away even when the test fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agog_tests::fleet::count;
use agog_tests::hub_process::{succeeded, HubProcess};
use agog_tests::netns::{unique_ifname, Netns};
use agog_tests::pki::pki_for;
use agog_tests::receivers::smtp;
use agog_tests::{cluster, wait_until, Cluster};

const TENANT: &str = "tenant-foo-inc";
const IT_EMAIL: &str = "it@foo-inc.test";
/// Fixed ports: the namespace is the test's own.
const API_PORT: u16 = 8443;
const WEB_PORT: u16 = 8444;
const WG_PORT: u16 = 51820;
/// The unprivileged user image-builder runs as (scripts/setup-image.sh makes it).
const BUILDER: &str = "agog-image";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A directory removed when dropped (the image alone is 1.9 GB, sparse).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The qemu process, killed and reaped when dropped.
struct Qemu {
    child: Child,
    serial: PathBuf,
}

impl Qemu {
    fn serial(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    fn tail(&self) -> String {
        let s = self.serial();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a command to completion; its output in the error when it fails.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One hardware size's box and how qemu runs it.
struct Machine {
    size: &'static str,
    facility_name: &'static str,
    facility: &'static str,
    /// The static agent's target directory.
    triple: &'static str,
    /// What check-image says about its partition table.
    table: &'static str,
    /// Power-on to online at the hub, at most.
    boot_deadline: Duration,
}

const NUC: Machine = Machine {
    size: "medium",
    facility_name: "Qemu Plant",
    facility: "facility-qemu-plant-001",
    triple: "x86_64-unknown-linux-musl",
    table: "GPT: 1 EFI system partition, 2 x86-64 root",
    boot_deadline: Duration::from_secs(600),
};

const PI: Machine = Machine {
    size: "small",
    facility_name: "Pi Plant",
    facility: "facility-pi-plant-001",
    triple: "aarch64-unknown-linux-musl",
    table: "MBR: 1 FAT32 (bootable), 2 Linux",
    boot_deadline: Duration::from_secs(900),
};

/// qemu for `m`, in `ns`, booting `disk` (`img` is the flashed image it overlays).
fn start_qemu(
    m: &Machine,
    ns: &Netns,
    prefix: &Path,
    dir: &Path,
    img: &Path,
    disk: &Path,
) -> anyhow::Result<Qemu> {
    let share = prefix.join("usr/share");
    let serial = dir.join("serial.log");
    let mut cmd;
    if m.size == "small" {
        // What the Pi's firmware reads from its FAT partition: the kernel, the initrd and the
        // command line.
        let at = format!("{}@@{}", img.display(), first_partition_offset(img)?);
        for f in ["vmlinuz", "initrd.img", "cmdline.txt"] {
            run(Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-n", "-i", &at, &format!("::/{f}")])
                .arg(dir.join(f)))?;
        }
        let cmdline = fs::read_to_string(dir.join("cmdline.txt"))?;
        let mut append: Vec<&str> = cmdline
            .split_whitespace()
            .filter(|w| !w.starts_with("console="))
            .collect();
        append.push("console=ttyAMA0,115200");
        cmd = ns.command(&prefix.join("usr/bin/qemu-system-aarch64").to_string_lossy());
        cmd.arg("-L")
            .arg(share.join("qemu"))
            .args(["-accel", "tcg", "-machine", "virt", "-cpu", "cortex-a72"])
            .arg("-kernel")
            .arg(dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(dir.join("initrd.img"))
            .arg("-append")
            .arg(append.join(" "))
            .args(["-device", "qemu-xhci,id=xhci"])
            .arg("-drive")
            .arg(format!(
                "if=none,id=usbdisk,file={},format=qcow2",
                disk.display()
            ))
            .args(["-device", "usb-storage,bus=xhci.0,drive=usbdisk"]);
    } else {
        let vars = dir.join("OVMF_VARS.fd");
        fs::copy(share.join("OVMF/OVMF_VARS.fd"), &vars)?;
        cmd = ns.command(&prefix.join("usr/bin/qemu-system-x86_64").to_string_lossy());
        cmd.arg("-L")
            .arg(share.join("qemu"))
            .args(["-accel", "tcg", "-machine", "q35", "-cpu", "max"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,readonly=on,file={}",
                share.join("OVMF/OVMF_CODE.fd").display()
            ))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", disk.display()));
    }
    let child = cmd
        .args(["-m", "1024", "-smp", "2", "-display", "none", "-no-reboot"])
        // User networking without a single forwarded port.
        .args(["-netdev", "user,id=n0"])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok(Qemu { child, serial })
}

/// The byte offset of an image's first partition (its FAT boot partition).
fn first_partition_offset(img: &Path) -> anyhow::Result<u64> {
    let dump = run(Command::new("sfdisk").arg("--json").arg(img))?;
    let v: serde_json::Value = serde_json::from_str(&dump)?;
    let start = v["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no partition in {dump}"))?;
    Ok(start * 512)
}

/// The browser-less visitor: curl inside the namespace, with a cookie jar for the session.
struct Visitor<'a> {
    ns: &'a Netns,
    jar: PathBuf,
}

impl Visitor<'_> {
    /// GET or POST (`form`: name=value pairs, url-encoded by curl); (status, body, headers).
    fn visit(
        &self,
        path_or_url: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String, String)> {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("http://127.0.0.1:{WEB_PORT}{path_or_url}")
        };
        let jar = self.jar.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "-c".into(),
            jar.clone(),
            "-b".into(),
            jar,
            "-D".into(),
            "-".into(),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        for (k, v) in form {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.push(url);
        let out = self.ns.command("curl").args(&args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (rest, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        Ok((code.trim().parse()?, body.to_string(), headers.to_string()))
    }

    fn download(&self, url: &str, to: &Path) -> anyhow::Result<()> {
        run(self
            .ns
            .command("curl")
            .args(["-sS", "--fail", "-o"])
            .arg(to)
            .arg(url))?;
        Ok(())
    }
}

fn hub_config(
    regional: &Cluster,
    dir: &Path,
    p: &agog_tests::pki::Pki,
    size: &str,
    golden: &Path,
    wg: &str,
    smtp_port: u16,
) -> String {
    format!(
        r#"region = "us-east"
database = "{db}"
# The regional reaches the box from the hub's tunnel address.
regional_address = "10.99.0.1"

[monitor]
interval_secs = 2
timeout_secs = 5
offline_after_secs = 120
tick_ms = 200

[reconcile]
interval_secs = 3

[api]
listen = "127.0.0.1:{API_PORT}"
tls_cert = "{cert}"
tls_key = "{key}"

[web]
listen = "127.0.0.1:{WEB_PORT}"
refresh_secs = 1

[master]
# The box reaches the master data (the regional itself) through the tunnel.
replication = "host=10.99.0.1 port={port} dbname=agog"

[tunnel]
range = "10.99.0.0/24"
# How the box sees this hub: qemu's gateway, the namespace's loopback.
endpoint = "10.0.2.2:{WG_PORT}"
listen_port = {WG_PORT}
interface = "{wg}"
private_key_file = "{dir}/hub-wg.key"
keepalive_secs = 5
backend = "userspace"
sync_secs = 1

[provision]
hub_url = "https://10.0.2.2:{API_PORT}"
ca_cert = "{ca}"
public_url = "http://127.0.0.1:{WEB_PORT}"
images_dir = "{dir}/images"
poll_ms = 300
# xz -0: the image test's time goes to booting; BENCHMARKS has the default level's figures.
xz_level = 0
base_images = {{ {size} = "{golden}" }}

[[alerts.channels]]
name = "ops-email"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "AGOG <alerts@agog.test>"
to = ["ops@agog.test"]
retry = {{ max_attempts = 3, initial_backoff_ms = 50, max_backoff_ms = 200, max_total_ms = 5000, request_timeout_ms = 3000 }}
"#,
        db = regional.conninfo(),
        port = regional.port,
        cert = p.hub_cert.display(),
        key = p.hub_key.display(),
        ca = p.ca_cert.display(),
        dir = dir.display(),
        golden = golden.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_nuc_image_boots_under_qemu_enrolls_and_syncs_through_its_wireguard_tunnel(
) -> anyhow::Result<()> {
    field_journey(&NUC).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_raspberry_pi_image_boots_under_qemu_aarch64_enrolls_and_syncs_through_its_tunnel(
) -> anyhow::Result<()> {
    field_journey(&PI).await
}

async fn field_journey(m: &Machine) -> anyhow::Result<()> {
    let repo = repo();
    // Build tools, the builder user, and qemu + OVMF unpacked into a private prefix.
    let qemu_prefix = run(Command::new("bash").arg(repo.join("scripts/setup-image.sh")))?;
    let qemu_prefix = PathBuf::from(qemu_prefix.trim().lines().last().unwrap_or_default());
    // The static agent that goes into the image: built by scripts/test.sh before the tests
    // (building it from here would wait on the build lock, or rebuild under the test's env).
    let agent = repo.join(format!("target/{}/release/edge-agent", m.triple));
    anyhow::ensure!(
        agent.exists(),
        "{} is missing: packaging/build-static (scripts/test.sh runs it)",
        agent.display()
    );
    let facility = m.facility;

    // The golden image, built rootless: image-builder as an unprivileged user.
    let work = TempDir(cluster::scratch_dir("img")?);
    let dir = &work.0;
    let golden_dir = dir.join("golden");
    fs::create_dir_all(&golden_dir)?;
    run(Command::new("chown").arg(BUILDER).arg(&golden_dir))?;
    let started = Instant::now();
    let mut build = Command::new("runuser");
    build
        .args(["-u", BUILDER, "--"])
        .arg(repo.join("image-builder/build-image"))
        .args([
            "--size",
            m.size,
            "--golden",
            "--compress",
            "none",
            "--name",
            "golden",
        ]);
    if m.size == "small" {
        // The lab's arm64 PostgreSQL 16 with pgvector (production: --pg-apt-source).
        let pg = run(&mut Command::new(repo.join("image-builder/postgres-arm64")))?;
        build
            .arg("--postgres")
            .arg(pg.trim().lines().last().unwrap_or_default());
    }
    let build = run(build
        .arg("--agent")
        .arg(&agent)
        .arg("--out")
        .arg(&golden_dir)
        .current_dir(&golden_dir)
        .stderr(Stdio::inherit()))?;
    eprintln!(
        "golden image built by {BUILDER} in {:.0} s{build}",
        started.elapsed().as_secs_f64()
    );
    let golden = golden_dir.join("golden.img");
    let checks = run(Command::new(repo.join("image-builder/check-image"))
        .args(["--size", m.size])
        .arg(&golden))?;
    let arch = if m.size == "small" {
        "ARM aarch64"
    } else {
        "x86-64"
    };
    assert!(
        checks.contains(m.table)
            && checks.contains("edge-agent: ELF 64-bit LSB")
            && checks.contains(arch),
        "{checks}"
    );
    // Nothing of any edge in it: the hub writes that.
    assert!(!checks.contains("bootstrap token"), "{checks}");

    // The region: database, hub, mail receiver, all in the namespace qemu will run in.
    let ns = Netns::new("img")?;
    let regional = Cluster::start_in_netns("img-us", &ns.name, &[])?;
    let mail = smtp::start_on(ns.bind_tcp("127.0.0.1:0")?);
    let p = pki_for(dir, &["127.0.0.1", "10.0.2.2"])?;
    let hub_wg = unique_ifname("wgi");
    let mut hub = HubProcess::new(
        "img-hub",
        &hub_config(
            &regional,
            dir,
            &p,
            m.size,
            &golden,
            &hub_wg,
            mail.addr.port(),
        ),
    )?;
    hub.netns = Some(ns.name.clone());
    succeeded(hub.cli_with_input(
        &["operator", "add", "root", "--password-stdin"],
        "a long root password\n",
    )?)?;
    hub.start()?;
    let visitor = Visitor {
        ns: &ns,
        jar: dir.join("cookies.txt"),
    };
    wait_until(
        "the hub's dashboard and tunnel interface",
        Duration::from_secs(60),
        || async {
            let web = visitor
                .visit("/login", &[])
                .map(|(c, _, _)| c == 200)
                .unwrap_or(false);
            let wg = ns
                .run("wg", &["show", &hub_wg, "listen-port"])
                .is_ok_and(|o| o.trim() == WG_PORT.to_string());
            Ok((web && wg).then_some(()))
        },
    )
    .await
    .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;

    // The operator signs in and submits the provisioning form.
    let submitted = Instant::now();
    let (code, _, headers) = visitor.visit(
        "/login",
        &[("name", "root"), ("password", "a long root password")],
    )?;
    assert_eq!(code, 303, "sign-in: {headers}");
    let form = |vpn: &'static str| {
        [
            ("tenant", TENANT),
            ("facility_name", m.facility_name),
            ("facility_address", "1 Emulated Way, Springfield"),
            ("network_mode", "dhcp"),
            ("vpn_type", vpn),
            ("vpn_endpoint", "10.0.2.2:51820"),
            ("hardware_size", m.size),
            ("it_contact_name", "Ima Tech"),
            ("it_contact_email", IT_EMAIL),
            ("it_contact_phone", "+1 415 555 0199"),
        ]
    };
    // A VPN type this region's hub does not run: refused next to the field, nothing made.
    let (code, body, _) = visitor.visit("/provision/new", &form("ipsec"))?;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("runs WireGuard tunnels"), "{body}");
    let us = regional.client().await?;
    let made = count(&us, "SELECT 1 FROM agog_hub.provisioning_requests").await?;
    assert_eq!(made, 0, "a refused form makes nothing");
    let (code, body, headers) = visitor.visit("/provision/new", &form("wireguard"))?;
    assert_eq!(code, 303, "the form: {headers}\n{body}");
    assert!(
        headers.contains(&format!("/provision/{facility}")),
        "{headers}"
    );
    // The hub-side peer: its address reserved now, the box's key to come.
    let (_, page, _) = visitor.visit(&format!("/provision/{facility}"), &[])?;
    assert!(
        page.contains("10.99.0.2 reserved on the hub")
            && page.contains("waiting for the box's key"),
        "{page}"
    );

    // The IT contact's email: the link and the sha256.
    let email = wait_until("the setup email", Duration::from_secs(180), || async {
        Ok(mail
            .accepted()
            .into_iter()
            .find(|m| m.envelope_to.iter().any(|t| t == IT_EMAIL)))
    })
    .await
    .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;
    let provisioned = submitted.elapsed();
    let text = email.text.clone().unwrap_or_default();
    let word = |pred: &dyn Fn(&str) -> bool| {
        text.split_whitespace()
            .map(|w| w.trim_matches(|c: char| "()[],;".contains(c)))
            .find(|w| pred(w))
            .map(String::from)
            .ok_or_else(|| anyhow::anyhow!("not in the email:\n{text}"))
    };
    let download = word(&|w| w.starts_with(&format!("http://127.0.0.1:{WEB_PORT}/downloads/")))?;
    let setup = word(&|w| w.starts_with(&format!("http://127.0.0.1:{WEB_PORT}/setup/")))?;
    let sha = word(&|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))?;

    // What the IT person does: download, check the sha256, flash (here: onto a disk file).
    let xz = dir.join("download.img.xz");
    visitor.download(&download, &xz)?;
    let got = run(Command::new("sha256sum").arg(&xz))?;
    assert_eq!(
        got.split_whitespace().next(),
        Some(sha.as_str()),
        "the download's sha256"
    );
    run(Command::new("xz").args(["-d", "-T0"]).arg(&xz))?;
    let img = dir.join("download.img");
    let checks = run(Command::new(repo.join("image-builder/check-image"))
        .args(["--size", m.size])
        .arg(&img))?;
    assert!(
        checks.contains("agog/edge.toml (with a bootstrap token)"),
        "{checks}"
    );
    let (_, setup_page, _) = visitor.visit(&setup, &[])?;
    assert!(
        setup_page.contains("WAITING FOR FIRST CONNECTION"),
        "{setup_page}"
    );

    // A disk of 4 GiB with the image on it (a copy-on-write overlay over the flashed file).
    let disk = dir.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&img)
        .arg(&disk)
        .arg("4G"))?;
    let boot = Instant::now();
    let mut qemu = start_qemu(m, &ns, &qemu_prefix, dir, &img, &disk)?;

    // Enrolled, and healthy as the hub's monitor sees it: its /health answered 200 at the
    // box's tunnel address. About two to three minutes here; the bound allows for a CI machine
    // running other tests beside it.
    let online = wait_until(
        "the box enrolls and the hub sees it online through the tunnel",
        m.boot_deadline,
        || {
            let exited = qemu.child.try_wait();
            let hub = &hub;
            async move {
                if let Ok(Some(status)) = exited {
                    anyhow::bail!("qemu exited: {status}");
                }
                Ok(hub
                    .edge(facility)?
                    .filter(|e| e["enrolled"] == true && e["state"] == "online"))
            }
        },
    )
    .await
    .map_err(|e| {
        e.context(format!(
            "serial console (last lines):\n{}\n\nhub log:\n{}",
            qemu.tail(),
            hub.log()
        ))
    })?;
    let to_online = boot.elapsed();
    eprintln!(
        "{}: power-on to online at the hub: {:.0} s",
        m.size,
        to_online.as_secs_f64()
    );
    // The address reserved at provisioning is the one the box got.
    assert_eq!(online["tunnel_address"], "10.99.0.2", "{online}");

    // The first boot grew the root file system to the 4 GiB disk.
    let console = qemu.serial();
    // The guest ran the image's own kernel, of the size's architecture.
    let kernel_flavour = if m.size == "small" {
        "-arm64 "
    } else {
        "-amd64 "
    };
    assert!(
        console
            .lines()
            .any(|l| l.contains("Linux version 6.") && l.contains(kernel_flavour)),
        "no {kernel_flavour}kernel on the console:\n{}",
        qemu.tail()
    );
    let grown = console
        .lines()
        .find_map(|l| {
            let rest = l
                .split("agog-firstboot: root file system grown from ")
                .nth(1)?;
            let mut it = rest.split(" to ");
            let before: u64 = it.next()?.trim().parse().ok()?;
            let after: u64 = it.next()?.split_whitespace().next()?.parse().ok()?;
            Some((before, after))
        })
        .ok_or_else(|| anyhow::anyhow!("no first-boot line on the console:\n{}", qemu.tail()))?;
    assert!(grown.0 < 1_700_000_000, "{grown:?}");
    assert!(grown.1 > 3_500_000_000, "{grown:?}");

    // The box's own /health through the tunnel: WireGuard up with the guest kernel's module.
    let health = ns.run("curl", &["-sS", "http://10.99.0.2:4010/health"])?;
    let health: serde_json::Value = serde_json::from_str(&health)?;
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["tunnel"]["kind"], "wireguard", "{health}");
    assert_eq!(health["tunnel"]["up"], true, "{health}");
    assert_eq!(health["tunnel"]["backend"], "kernel", "{health}");
    assert_eq!(health["tunnel"]["address"], "10.99.0.2/24", "{health}");
    // The hub's peer for it has the box's key and a handshake.
    let handshakes = ns.run("wg", &["show", &hub_wg, "latest-handshakes"])?;
    assert!(
        handshakes
            .lines()
            .any(|l| l.split_whitespace().nth(1).is_some_and(|t| t != "0")),
        "{handshakes}"
    );
    let (_, page, _) = visitor.visit(&format!("/provision/{facility}"), &[])?;
    assert!(
        page.contains("the box's key joined at enrollment"),
        "{page}"
    );
    let (_, setup_page, _) = visitor.visit(&setup, &[])?;
    assert!(setup_page.contains("ONLINE"), "{setup_page}");

    // What the hub recorded, and replication both ways through the tunnel.
    let row = us
        .query_one(
            "SELECT agent_version, replication_conninfo FROM agog_hub.edges WHERE facility_id = $1",
            &[&facility],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), env!("CARGO_PKG_VERSION"));
    assert!(
        row.get::<_, String>(1).contains("host='10.99.0.2'"),
        "{}",
        row.get::<_, String>(1)
    );
    // Edge -> regional: the box's heartbeat row arrives.
    wait_until(
        "the box's heartbeat at the regional",
        Duration::from_secs(180),
        || async {
            let n = count(
                &us,
                &format!("SELECT 1 FROM public.edge_heartbeats WHERE facility_id = '{facility}'"),
            )
            .await?;
            Ok((n >= 1).then_some(()))
        },
    )
    .await
    .map_err(|e| {
        e.context(format!(
            "serial console:\n{}\n\nhub log:\n{}",
            qemu.tail(),
            hub.log()
        ))
    })?;
    // Master data -> the box: a new product's commit is confirmed by the box's subscription,
    // whose connection comes from its tunnel address.
    us.execute(
        "INSERT INTO public.products (tenant_id, sku, name) VALUES ($1, 'QEMU-1', 'emulated widget')",
        &[&TENANT],
    )
    .await?;
    let lsn: String = us
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    wait_until(
        "the box confirms the new product through the tunnel",
        Duration::from_secs(180),
        || async {
            let n = count(
                &us,
                &format!(
                    "SELECT 1 FROM pg_stat_replication WHERE usename LIKE 'agog_edge_%'
                  AND client_addr = '10.99.0.2' AND state = 'streaming'
                  AND flush_lsn >= '{lsn}'::pg_lsn"
                ),
            )
            .await?;
            Ok((n >= 1).then_some(()))
        },
    )
    .await
    .map_err(|e| e.context(format!("serial console:\n{}", qemu.tail())))?;
    eprintln!(
        "{}: form to the IT contact's email (image written, xz -0) {:.0} s; power-on to online {:.0} s, to replication both ways through the tunnel {:.0} s",
        m.size,
        provisioned.as_secs_f64(),
        to_online.as_secs_f64(),
        boot.elapsed().as_secs_f64()
    );

    drop(qemu);
    hub.stop();
    Ok(())
}
