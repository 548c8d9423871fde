//! The tunnel templates (`vpn-templates/`, rendered by `sync_core::vpn`) checked by the real
//! tools' own parsers: the wg-quick file through `wg-quick strip` and `wg setconf` into a real
//! userspace WireGuard device (wireguard-go, in a namespace of its own), read back with
//! `wg showconf`; the OpenVPN client config through `openvpn` itself (its option parser, which
//! prints every parsed option at verb 4, and refuses a broken file).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agog_tests::cluster::scratch_dir;
use agog_tests::netns::{unique_ifname, Netns};
use sync_core::vpn::{IpsecValues, OpenVpnValues, WireGuardValues};

fn wg_key() -> (String, String) {
    let private = Command::new("wg").arg("genkey").output().unwrap();
    assert!(private.status.success());
    let private = String::from_utf8(private.stdout)
        .unwrap()
        .trim()
        .to_string();
    let mut c = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let public = c.wait_with_output().unwrap();
    (
        private,
        String::from_utf8(public.stdout).unwrap().trim().into(),
    )
}

#[test]
fn wireguard_files_load_into_a_real_device() {
    let dir = scratch_dir("vpn-wg").unwrap();
    let (private, public) = wg_key();
    let (_, hub_public) = wg_key();
    let iface = unique_ifname("agt");
    let v = WireGuardValues {
        facility: "facility-la-001".into(),
        interface: iface.clone(),
        private_key: private.clone(),
        address: "10.99.0.7/24".into(),
        listen_port: Some(51999),
        mtu: Some(1420),
        peer_public_key: hub_public.clone(),
        endpoint: "192.0.2.1:51820".into(),
        allowed_ips: vec!["10.99.0.0/24".into(), "10.98.1.0/24".into()],
        keepalive_secs: 25,
    };
    let files = v.render().unwrap();
    for f in &files {
        let p = dir.join(&f.file_name);
        fs::write(&p, &f.text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let conf = dir.join(format!("{iface}.conf"));

    // wg-quick's own parser: strip leaves what `wg setconf` takes (Address, MTU go).
    let strip = Command::new("wg-quick")
        .arg("strip")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        strip.status.success(),
        "wg-quick strip: {}",
        String::from_utf8_lossy(&strip.stderr)
    );
    let stripped = String::from_utf8(strip.stdout).unwrap();
    assert!(!stripped.contains("Address"), "{stripped}");
    let stripped_path = dir.join("stripped.conf");
    fs::write(&stripped_path, &stripped).unwrap();

    // A real device: wireguard-go in a namespace of its own, `wg setconf` into it.
    let ns = Netns::new("tpl").unwrap();
    let mut child = ns
        .command("wireguard-go")
        .arg(&iface)
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = format!("/var/run/wireguard/{iface}.sock");
    let start = Instant::now();
    while !std::path::Path::new(&sock).exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no {sock}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let set = ns.run("wg", &["setconf", &iface, stripped_path.to_str().unwrap()]);
    let shown = ns.run("wg", &["showconf", &iface]);
    // SIGTERM: wireguard-go removes its socket (the namespace's Drop removes a stale one).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    set.unwrap();
    let shown = shown.unwrap();
    assert!(
        shown.contains(&format!("PrivateKey = {private}")),
        "{shown}"
    );
    assert!(shown.contains("ListenPort = 51999"), "{shown}");
    assert!(
        shown.contains(&format!("PublicKey = {hub_public}")),
        "{shown}"
    );
    assert!(shown.contains("Endpoint = 192.0.2.1:51820"), "{shown}");
    assert!(
        shown.contains("AllowedIPs = 10.99.0.0/24, 10.98.1.0/24"),
        "{shown}"
    );
    assert!(shown.contains("PersistentKeepalive = 25"), "{shown}");
    assert_ne!(public, hub_public);

    // The networkd pair names the same device, key and peer.
    let netdev = &files[1].text;
    assert!(
        netdev.contains(&format!("Name = {iface}\nKind = wireguard")),
        "{netdev}"
    );
    assert!(
        netdev.contains(&format!("PrivateKey = {private}")),
        "{netdev}"
    );
    assert!(
        files[2].text.contains("Address = 10.99.0.7/24"),
        "{}",
        files[2].text
    );
    let _ = fs::remove_dir_all(&dir);
}

/// openvpn parses the whole file before it opens anything; at verb 4 it prints every option as
/// parsed. Run it in an empty namespace (nothing to reach) and stop it once the options are out.
fn openvpn_parse(ns: &Netns, conf: &std::path::Path) -> (bool, String) {
    let dir = conf.parent().unwrap();
    let log = dir.join("openvpn.log");
    let _ = fs::remove_file(&log);
    let out = fs::File::create(dir.join("openvpn.out")).unwrap();
    let mut child = ns
        .command("openvpn")
        .arg("--config")
        .arg(conf)
        .args(["--verb", "4", "--log"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let exited = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Current Parameter Settings")
            && text.contains("remote_cert_eku")
            && start.elapsed() > Duration::from_millis(500)
        {
            break None;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Options errors go to stderr (the --log option is never reached).
    let text = fs::read_to_string(&log).unwrap_or_default()
        + &fs::read_to_string(dir.join("openvpn.out")).unwrap_or_default();
    let parsed = !text.contains("Options error") && text.contains("Current Parameter Settings");
    (parsed, text)
}

#[test]
fn openvpn_client_config_passes_openvpns_option_parser() {
    let dir = scratch_dir("vpn-ovpn").unwrap();
    let p = agog_tests::pki::pki(&dir).unwrap();
    let tc = dir.join("tls-crypt.key");
    let gen = Command::new("openvpn")
        .args(["--genkey", "tls-crypt"])
        .arg(&tc)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let iface = unique_ifname("ovt");
    let sock = dir.join("mgmt.sock");
    let v = OpenVpnValues {
        facility: "facility-la-001".into(),
        interface: iface.clone(),
        proto: "udp".into(),
        remote_host: "192.0.2.1".into(),
        remote_port: 1194,
        server_name: "hub".into(),
        ca: p.ca_cert.display().to_string(),
        cert: p.hub_cert.display().to_string(),
        key: p.hub_key.display().to_string(),
        tls_crypt: tc.display().to_string(),
        management_socket: sock.display().to_string(),
    };
    let r = v.render().unwrap();
    let conf = dir.join(&r.file_name);
    fs::write(&conf, &r.text).unwrap();
    let ns = Netns::new("ovpn").unwrap();
    let (parsed, log) = openvpn_parse(&ns, &conf);
    assert!(parsed, "openvpn refused the rendered config:\n{log}");
    for want in [
        "remote_cert_eku = 'TLS Web Server Authentication'".to_string(),
        "verify_x509_name = 'hub'".into(),
        format!("dev = '{iface}'"),
        "remote = '192.0.2.1'".into(),
        "remote_port = '1194'".into(),
        format!("management_addr = '{}'", sock.display()),
        format!("ca_file = '{}'", p.ca_cert.display()),
    ] {
        assert!(
            log.contains(&want),
            "openvpn did not parse {want:?}:\n{log}"
        );
    }

    // The check can fail: the same file with one option misspelt is refused.
    let bad = dir.join("bad.conf");
    fs::write(&bad, r.text.replace("remote-cert-tls", "remote-cert-tlz")).unwrap();
    let (parsed, log) = openvpn_parse(&ns, &bad);
    assert!(!parsed, "openvpn took a misspelt option:\n{log}");
    assert!(log.contains("Options error"), "{log}");
    let _ = fs::remove_dir_all(&dir);
}

/// swanctl.conf through swanctl itself, loaded into a real charon (charon-systemd in a network
/// namespace and a mount namespace of its own: its pid file path is fixed under /run) over its
/// VICI socket. swanctl exits 0 on a syntax error, so its stderr is checked too.
fn swanctl_load(strongswan_conf: &std::path::Path, file: &std::path::Path) -> (bool, String) {
    let out = Command::new("swanctl")
        .args(["--load-all", "--noprompt", "--file"])
        .arg(file)
        .env("STRONGSWAN_CONF", strongswan_conf)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = [
        "syntax error",
        "invalid config",
        "config discarded",
        "loading connection",
    ]
    .iter()
    .any(|m| text.contains(m));
    (out.status.success() && !refused, text)
}

#[test]
fn swanctl_conf_loads_into_a_real_charon() {
    let dir = scratch_dir("vpn-swan").unwrap();
    let run = dir.join("run");
    fs::create_dir_all(&run).unwrap();
    let vici = dir.join("charon.vici");
    let conf = dir.join("strongswan.conf");
    fs::write(
        &conf,
        format!(
            "charon-systemd {{
  load_modular = no
  load = random nonce aes sha1 sha2 pem pkcs1 pkcs8 x509 revocation constraints pubkey hmac gcm kdf vici kernel-libipsec kernel-netlink socket-default
  plugins {{
    vici {{ socket = unix://{vici} }}
  }}
  journal {{ default = -1 }}
}}
swanctl {{ socket = unix://{vici} }}
",
            vici = vici.display()
        ),
    )
    .unwrap();
    let v = IpsecValues {
        facility: "facility-la-001".into(),
        local_addrs: "192.0.2.2".into(),
        remote_addrs: "192.0.2.1".into(),
        local_id: "facility-la-001".into(),
        remote_id: "hub.us-east".into(),
        local_ts: "10.97.0.2/32".into(),
        remote_ts: "10.97.0.0/24".into(),
        auth: "psk".into(),
        psk: Some("a-pre-shared-key-of-more-than-twenty".into()),
        local_pubkey: None,
        remote_pubkey: None,
        dpd_secs: 10,
        start_action: "start".into(),
    };
    let r = v.render().unwrap();
    assert!(r.secret);
    let file = dir.join(&r.file_name);
    fs::write(&file, &r.text).unwrap();

    let ns = Netns::new("swan").unwrap();
    let mut charon = ns
        .command("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            &format!(
                "mount --bind {} /run && exec /usr/sbin/charon-systemd",
                run.display()
            ),
        ])
        .env("STRONGSWAN_CONF", &conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !vici.exists() {
        if start.elapsed() > Duration::from_secs(10) || charon.try_wait().unwrap().is_some() {
            let _ = charon.kill();
            panic!("charon made no VICI socket at {}", vici.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (loaded, text) = swanctl_load(&conf, &file);
    let listed = Command::new("swanctl")
        .arg("--list-conns")
        .env("STRONGSWAN_CONF", &conf)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    // A broken file: an unknown key is refused, and the check says so.
    let bad = dir.join("bad.conf");
    fs::write(&bad, r.text.replace("remote_ts =", "remote_tz =")).unwrap();
    let (bad_loaded, bad_text) = swanctl_load(&conf, &bad);
    // SAFETY: our own child (charon after the exec chain).
    unsafe { libc::kill(charon.id() as i32, libc::SIGTERM) };
    let _ = charon.wait();

    assert!(loaded, "swanctl refused the rendered swanctl.conf:\n{text}");
    assert!(
        text.contains("loaded ike secret 'ike-agog'")
            && text.contains("loaded connection 'agog-facility-la-001'"),
        "{text}"
    );
    assert!(listed.contains("agog-facility-la-001: IKEv2"), "{listed}");
    assert!(listed.contains("remote: 192.0.2.1"), "{listed}");
    assert!(
        listed.contains("local:  10.97.0.2/32") && listed.contains("remote: 10.97.0.0/24"),
        "{listed}"
    );
    assert!(!bad_loaded, "swanctl took an unknown key:\n{bad_text}");
    let _ = fs::remove_dir_all(&dir);
}
