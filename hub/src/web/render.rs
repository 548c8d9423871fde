//! Templates (embedded in the binary) and the filters they use.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use minijinja::{Environment, Value};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("fleet.html", include_str!("templates/fleet.html")),
    ("fleet_live.html", include_str!("templates/fleet_live.html")),
    ("edge.html", include_str!("templates/edge.html")),
    ("edge_live.html", include_str!("templates/edge_live.html")),
    (
        "inventory_index.html",
        include_str!("templates/inventory_index.html"),
    ),
    ("inventory.html", include_str!("templates/inventory.html")),
    (
        "inventory_live.html",
        include_str!("templates/inventory_live.html"),
    ),
    ("alerts.html", include_str!("templates/alerts.html")),
    (
        "alerts_live.html",
        include_str!("templates/alerts_live.html"),
    ),
    ("alert_rows.html", include_str!("templates/alert_rows.html")),
    ("fallback.html", include_str!("templates/fallback.html")),
    (
        "provision_list.html",
        include_str!("templates/provision_list.html"),
    ),
    (
        "provision_form.html",
        include_str!("templates/provision_form.html"),
    ),
    (
        "provision_status.html",
        include_str!("templates/provision_status.html"),
    ),
    (
        "provision_live.html",
        include_str!("templates/provision_live.html"),
    ),
    ("setup.html", include_str!("templates/setup.html")),
    ("setup_live.html", include_str!("templates/setup_live.html")),
    (
        "fallback_done.html",
        include_str!("templates/fallback_done.html"),
    ),
];

pub const STYLE_CSS: &str = include_str!("static/style.css");
pub const APP_JS: &str = include_str!("static/app.js");

pub fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        env.add_filter("age", |v: Option<f64>| age(v));
        env.add_filter("bytes", |v: Option<i64>| bytes(v));
        env.add_filter("ts", |v: Option<String>| ts(v.as_deref()));
        env.add_filter("qty", qty);
        env
    })
}

/// Render `name` with `ctx`; a template error is a bug, logged and shown as such.
pub fn render(name: &str, ctx: Value) -> Result<String, String> {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| {
            tracing::error!(template = name, error = %format!("{e:#}"), "template failed");
            format!("template {name} failed")
        })
}

/// `12 s`, `4 min`, `2 h 5 min`, `3 d 4 h`; `—` when unknown.
pub fn age(secs: Option<f64>) -> String {
    let Some(s) = secs.filter(|s| s.is_finite()) else {
        return "—".into();
    };
    let s = s.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        3600..=86399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// `512 B`, `4.0 KiB`, `12.3 MiB`; `—` when unknown.
pub fn bytes(b: Option<i64>) -> String {
    let Some(b) = b else {
        return "—".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `1,247`, `12,000.5`: thousands grouped, no trailing zeros (quantities have 3 decimals).
pub fn qty(v: f64) -> String {
    let s = format!("{:.3}", v.abs());
    let (int, frac) = s.split_once('.').expect("a fixed-point number");
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let frac = frac.trim_end_matches('0');
    format!(
        "{}{grouped}{}{frac}",
        if v < 0.0 { "-" } else { "" },
        if frac.is_empty() { "" } else { "." }
    )
}

/// An RFC 3339 time as `2025-12-10 14:30:05 UTC`.
pub fn ts(t: Option<&str>) -> String {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|| "—".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_like_a_person_would_say_it() {
        assert_eq!(age(Some(12.4)), "12 s");
        assert_eq!(age(Some(600.0)), "10 min");
        assert_eq!(age(Some(7500.0)), "2 h 5 min");
        assert_eq!(age(None), "—");
        assert_eq!(bytes(Some(512)), "512 B");
        assert_eq!(bytes(Some(4096)), "4.0 KiB");
        assert_eq!(qty(1247.0), "1,247");
        assert_eq!(qty(583.0), "583");
        assert_eq!(qty(1234567.25), "1,234,567.25");
        assert_eq!(qty(-12.5), "-12.5");
        assert_eq!(
            ts(Some("2025-12-10T14:30:05.123+00:00")),
            "2025-12-10 14:30:05 UTC"
        );
    }

    #[test]
    fn every_template_compiles() {
        let env = env();
        for (name, _) in TEMPLATES {
            env.get_template(name).unwrap();
        }
    }
}
