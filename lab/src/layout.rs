//! What the lab runs: two regions, three edges, two tenants and their catalogue. One place, so
//! `up`, `write`, `status` and the tests agree on names.

pub struct Region {
    pub region: &'static str,
    /// The dashboard's port when it is free (a random one otherwise).
    pub preferred_web_port: u16,
}

pub struct Edge {
    pub node: &'static str,
    pub facility: &'static str,
    pub name: &'static str,
    pub tenant: &'static str,
    pub region: &'static str,
}

pub const REGIONS: &[Region] = &[
    Region {
        region: "us-east",
        preferred_web_port: 8080,
    },
    Region {
        region: "eu-central",
        preferred_web_port: 8081,
    },
];

pub const EDGES: &[Edge] = &[
    Edge {
        node: "la",
        facility: "facility-la-001",
        name: "Los Angeles plant",
        tenant: "tenant-foo-inc",
        region: "us-east",
    },
    Edge {
        node: "nyc",
        facility: "facility-nyc-001",
        name: "New York warehouse",
        tenant: "tenant-bar-co",
        region: "us-east",
    },
    Edge {
        node: "fra",
        facility: "facility-frankfurt-001",
        name: "Frankfurt plant",
        tenant: "tenant-foo-inc",
        region: "eu-central",
    },
];

pub const TENANTS: &[&str] = &["tenant-foo-inc", "tenant-bar-co"];

/// (tenant, sku, name, starting quantity)
pub const PRODUCTS: &[(&str, &str, &str, i32)] = &[
    ("tenant-foo-inc", "BOX-12x9", "Corrugated Box 12x9", 1247),
    ("tenant-foo-inc", "WRAP-BUB", "Bubble Wrap Roll", 583),
    ("tenant-foo-inc", "TAPE-48", "Packing Tape", 892),
    ("tenant-foo-inc", "WRAP-PAL", "Pallet Wrap 18in", 140),
    ("tenant-foo-inc", "LBL-4x6", "Shipping Labels 4x6", 5200),
    ("tenant-bar-co", "BOLT-M8", "Steel Bolt M8", 12000),
    ("tenant-bar-co", "NUT-M8", "Hex Nut M8", 11800),
    ("tenant-bar-co", "WASH-8", "Washer 8mm", 9000),
    ("tenant-bar-co", "WR-TQ", "Torque Wrench", 35),
];

/// (tenant, name, email)
pub const CUSTOMERS: &[(&str, &str, &str)] = &[
    ("tenant-foo-inc", "Acme Packaging", "orders@acme.example"),
    ("tenant-foo-inc", "Globex Retail", "buying@globex.example"),
    ("tenant-bar-co", "Initech Machines", "parts@initech.example"),
];

/// The operator who sees every tenant, and the one who sees only tenant-foo-inc.
pub const ADMIN: &str = "admin";
pub const TENANT_OPERATOR: &str = "foo-viewer";
pub const TENANT_OPERATOR_TENANT: &str = "tenant-foo-inc";
