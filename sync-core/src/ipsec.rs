//! strongSwan helpers shared by the agent and the hub: raw RSA keys made on the box (with the
//! `openssl` tool; charon's gmp plugin reads them), and `swanctl` calls checked properly
//! (swanctl exits 0 on a syntax error: its output is read too).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The RSA private key in `path` (made 0600 when missing); returns its public key (PEM).
pub fn rsa_key(path: &Path) -> Result<String> {
    if !path.exists() {
        let out = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:3072",
            ])
            .output()
            .context("run openssl genpkey")?;
        if !out.status.success() {
            bail!("openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
        }
        crate::fsutil::write_private(path, &out.stdout)?;
    }
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(path)
        .output()
        .context("run openssl pkey")?;
    if !out.status.success() {
        bail!("openssl pkey: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A PEM `PUBLIC KEY` and nothing else (checked before it is written where charon reads it).
pub fn is_public_key_pem(s: &str) -> bool {
    let s = s.trim();
    let Some(body) = s
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|b| b.strip_suffix("-----END PUBLIC KEY-----"))
    else {
        return false;
    };
    s.len() < 4096
        && !body.trim().is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '\n' | '\r'))
}

fn swanctl(strongswan_conf: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("swanctl")
        .args(args)
        .env("STRONGSWAN_CONF", strongswan_conf)
        .output()
        .context("run swanctl")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success()
        || [
            "syntax error",
            "invalid config",
            "config discarded",
            "loading connection",
        ]
        .iter()
        .any(|m| text.contains(m))
    {
        bail!("swanctl {}: {}", args.join(" "), text.trim());
    }
    Ok(text)
}

/// `swanctl --load-all --file <file>`: connections and credentials (from the file's directory);
/// connections not in the file are unloaded.
pub fn load_all(strongswan_conf: &Path, file: &Path) -> Result<String> {
    swanctl(
        strongswan_conf,
        &[
            "--load-all",
            "--noprompt",
            "--file",
            &file.to_string_lossy(),
        ],
    )
}

/// Whether `connection` has an established IKE SA with an installed CHILD SA.
pub fn sa_up(strongswan_conf: &Path, connection: &str) -> Result<bool> {
    let text = swanctl(strongswan_conf, &["--list-sas", "--ike", connection])?;
    Ok(text.contains("ESTABLISHED") && text.contains("INSTALLED"))
}

/// strongswan.conf for a charon of our own: its VICI socket at `vici`, kernel-libipsec (ESP in
/// userspace) listed before kernel-netlink, its log in `charon-ike.log` beside the socket.
pub fn strongswan_conf(vici: &Path) -> String {
    format!(
        "charon-systemd {{
  load_modular = no
  load = random nonce aes sha1 sha2 pem pkcs1 pkcs8 x509 revocation constraints pubkey gmp openssl hmac gcm kdf vici kernel-libipsec kernel-netlink socket-default
  plugins {{
    vici {{ socket = unix://{vici} }}
  }}
  journal {{ default = -1 }}
  filelog {{
    agog {{
      path = {log}
      default = 1
      ike = 1
      knl = 1
    }}
  }}
}}
swanctl {{ socket = unix://{vici} }}
",
        vici = vici.display(),
        log = vici.with_file_name("charon-ike.log").display()
    )
}
