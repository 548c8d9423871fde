//! What the IT contact is told: the design's setup steps with the image's link and sha256, and
//! the setup page that follows the box from "waiting for first connection" to online.

use super::config::ProvisionConfig;
use super::image;
use super::request::Provisioned;
use crate::config::HubConfig;

fn base(cfg: &ProvisionConfig) -> &str {
    cfg.public_url.trim_end_matches('/')
}

pub fn download_url(cfg: &ProvisionConfig, p: &Provisioned) -> String {
    format!(
        "{}/downloads/{}/{}",
        base(cfg),
        p.setup_key,
        image::file_name(&p.facility_id)
    )
}

pub fn setup_url(cfg: &ProvisionConfig, p: &Provisioned) -> String {
    format!("{}/setup/{}", base(cfg), p.setup_key)
}

fn hardware(size: &str) -> &'static str {
    match size {
        "small" => "Raspberry Pi 4",
        "medium" => "Intel NUC",
        _ => "server",
    }
}

fn network_line(p: &Provisioned) -> String {
    match p.network["mode"].as_str() {
        Some("static") => format!(
            "Static IP: {}/{} (gateway {})",
            p.network["address"].as_str().unwrap_or("?"),
            p.network["prefix"],
            p.network["gateway"].as_str().unwrap_or("?")
        ),
        _ => "DHCP: the box takes its address from your network".into(),
    }
}

pub fn setup_email(hub: &HubConfig, cfg: &ProvisionConfig, p: &Provisioned) -> (String, String) {
    let subject = format!(
        "AgogSaaS edge computer setup instructions: {} ({})",
        p.facility_name, p.facility_id
    );
    let mib = p.image_bytes.unwrap_or(0) as f64 / 1048576.0;
    let text = format!(
        "Your edge computer is ready!\n\
         \n\
         Edge ID: {facility}\n\
         Facility: {name}\n\
         Hardware: {hardware} ({size})\n\
         \n\
         Setup steps:\n\
         \n\
         1. Download the edge image: {download}\n   \
            ({mib:.0} MiB; sha256 {sha})\n\
         2. Flash it to a USB drive or SD card with Balena Etcher (https://etcher.io).\n   \
            Etcher checks the written image by itself.\n\
         3. Install on the edge computer: boot from the USB drive (the first boot prepares the\n   \
            disk by itself, about 5 minutes).\n\
         4. Connect to the network: an Ethernet cable to your facility network.\n   \
            {network}\n\
         5. Automatic configuration: the edge connects to the {region} hub and its VPN\n   \
            ({vpn} via {endpoint}); the first sync starts by itself (10-15 minutes).\n\
         \n\
         Track the setup: {setup}\n\
         (\"waiting for first connection\" until the box enrolls, then its state.)\n\
         \n\
         The link to the image is personal: it holds the box's one-time enrollment key, valid\n\
         until {expires}. Questions? Reply to this email.\n",
        facility = p.facility_id,
        name = p.facility_name,
        hardware = hardware(&p.hardware_size),
        size = p.hardware_size,
        download = download_url(cfg, p),
        sha = p.image_sha256.as_deref().unwrap_or("-"),
        network = network_line(p),
        region = hub.region,
        vpn = p.vpn_type,
        endpoint = p.vpn_endpoint,
        setup = setup_url(cfg, p),
        expires = p.token_expires_at.format("%Y-%m-%d %H:%M UTC"),
    );
    (subject, text)
}

pub fn not_enrolled(hub: &HubConfig, cfg: &ProvisionConfig, p: &Provisioned) -> (String, String) {
    let subject = format!(
        "Edge {} ({}) has not connected yet",
        p.facility_id, p.facility_name
    );
    let text = format!(
        "The edge computer for {name} ({facility}, region {region}) has not enrolled, {days} days\n\
         after its image was ready ({ready}).\n\
         \n\
         - Was the image flashed and the box booted? The steps are in the setup email sent to\n  \
           {it} ({phone}).\n\
         - Is the box connected to the network ({network})?\n\
         - Its one-time key is valid until {expires}; after that, a new image is needed.\n\
         \n\
         Setup page: {setup}\n",
        name = p.facility_name,
        facility = p.facility_id,
        region = hub.region,
        days = cfg.not_enrolled_alert_days,
        ready = p
            .image_ready_at
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default(),
        it = p.it_email,
        phone = p.it_phone,
        network = network_line(p),
        expires = p.token_expires_at.format("%Y-%m-%d %H:%M UTC"),
        setup = setup_url(cfg, p),
    );
    (subject, text)
}
