//! The three directions of the design on real clusters: two regions (us-east in the separate
//! layout with its own master-data cluster, eu-central in the shared layout), three edges.

use std::time::Duration;

use agog_tests::fleet::{
    checksum, count, exec, spec_toml, subscription_error_counts, wait_count,
    wait_subscriptions_ready, Node,
};
use agog_tests::Cluster;
use sync_core::{reconcile_all, Topology};

const T: Duration = Duration::from_secs(60);
const LA: &str = "facility-la-001";
const NYC: &str = "facility-nyc-001";
const FRA: &str = "facility-frankfurt-001";
const A: &str = "tenant-foo-inc";
const B: &str = "tenant-bar-co";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_moves_in_all_three_directions_without_loops_loss_or_duplicates() -> anyhow::Result<()>
{
    let us = Cluster::start("us-east")?;
    let usm = Cluster::start("us-east-master")?;
    let eu = Cluster::start("eu-central")?;
    let la = Cluster::start("la")?;
    let nyc = Cluster::start("nyc")?;
    let fra = Cluster::start("fra")?;
    let spec = spec_toml(
        &[
            Node::regional("us-east", "us-east", &us),
            Node::master("us-east-master", "us-east", &usm),
            Node::regional("eu-central", "eu-central", &eu),
            Node::edge("la", "us-east", LA, A, &la),
            Node::edge("nyc", "us-east", NYC, B, &nyc),
            Node::edge("fra", "eu-central", FRA, A, &fra),
        ],
        &[
            ("la", "us-east", "operational"),
            ("nyc", "us-east", "operational"),
            ("fra", "eu-central", "operational"),
            ("us-east-master", "la", "master"),
            ("us-east-master", "nyc", "master"),
            ("us-east-master", "us-east", "master"),
            ("eu-central", "fra", "master"),
            ("us-east", "eu-central", "global"),
            ("eu-central", "us-east", "global"),
        ],
    );
    let topo = Topology::from_toml(&spec)?;
    for r in reconcile_all(&topo, 4).await {
        let plan = r?;
        assert!(
            plan.steps.is_empty() && plan.blocked.is_empty(),
            "not settled after 4 passes:\n{plan}"
        );
    }
    let (us_c, usm_c, eu_c) = (us.client().await?, usm.client().await?, eu.client().await?);
    let (la_c, nyc_c, fra_c) = (la.client().await?, nyc.client().await?, fra.client().await?);
    for c in [&us_c, &eu_c, &la_c, &nyc_c, &fra_c] {
        wait_subscriptions_ready(c, T).await?;
    }

    // ---- edge -> regional: inserts, updates and deletes of LA's operational rows reach us-east.
    exec(&la_c, &format!(
        "INSERT INTO orders (facility_id, tenant_id, order_number) SELECT '{LA}', '{A}', 'LA-' || g FROM generate_series(1, 3) g;
         UPDATE orders SET status = 'shipped' WHERE order_number = 'LA-1';
         DELETE FROM orders WHERE order_number = 'LA-3';
         INSERT INTO production_logs (facility_id, tenant_id, line, quantity) VALUES ('{LA}', '{A}', 'line-1', 40);
         INSERT INTO quality_inspections (facility_id, tenant_id, result) VALUES ('{LA}', '{A}', 'pass');"
    ))
    .await?;
    exec(&nyc_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{NYC}', '{B}', 'NYC-1')"))
        .await?;
    wait_count(
        &us_c,
        &format!("SELECT 1 FROM orders WHERE facility_id = '{LA}'"),
        2,
        T,
    )
    .await?;
    wait_count(
        &us_c,
        &format!("SELECT 1 FROM orders WHERE facility_id = '{NYC}'"),
        1,
        T,
    )
    .await?;
    wait_count(
        &us_c,
        "SELECT 1 FROM orders WHERE order_number = 'LA-1' AND status = 'shipped'",
        1,
        T,
    )
    .await?;
    wait_count(
        &us_c,
        "SELECT 1 FROM production_logs UNION ALL SELECT 1 FROM quality_inspections",
        2,
        T,
    )
    .await?;
    assert_eq!(
        count(&eu_c, "SELECT 1 FROM orders").await?,
        0,
        "operational rows must not leave their region"
    );
    assert_eq!(
        count(
            &la_c,
            &format!("SELECT 1 FROM orders WHERE facility_id = '{NYC}'")
        )
        .await?,
        0
    );

    // The row filter holds on its own: a row of another facility written on LA with the guard
    // bypassed (as replication's apply would) stays on LA. Rows of one slot arrive in commit
    // order, so once the marker is there the other row would have been too.
    exec(&la_c, &format!(
        "BEGIN; SET LOCAL session_replication_role = replica;
         INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{NYC}', '{B}', 'SMUGGLED');
         COMMIT;
         INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'MARKER');"
    ))
    .await?;
    wait_count(
        &us_c,
        "SELECT 1 FROM orders WHERE order_number = 'MARKER'",
        1,
        T,
    )
    .await?;
    assert_eq!(
        count(
            &us_c,
            "SELECT 1 FROM orders WHERE order_number = 'SMUGGLED'"
        )
        .await?,
        0
    );

    // ---- regional -> edge: tenant A's master data reaches A's edges only.
    exec(&usm_c, &format!(
            "INSERT INTO customers (tenant_id, name) VALUES ('{A}', 'Acme Packaging'), ('{B}', 'Bar Logistics');
             INSERT INTO products (tenant_id, sku, name, embedding)
                  VALUES ('{A}', 'BOX-12x9', 'Corrugated Box 12x9', array_fill(0.25::real, ARRAY[384])::vector);
             INSERT INTO system_configuration (tenant_id, key, value) VALUES ('{A}', 'currency', '\"USD\"');"
        ))
        .await?;
    exec(
        &eu_c,
        &format!("INSERT INTO customers (tenant_id, name) VALUES ('{A}', 'Frankfurt Kunde')"),
    )
    .await?;
    wait_count(&la_c, "SELECT 1 FROM customers", 1, T).await?;
    wait_count(
        &la_c,
        "SELECT 1 FROM products WHERE embedding = array_fill(0.25::real, ARRAY[384])::vector",
        1,
        T,
    )
    .await?;
    wait_count(&nyc_c, "SELECT 1 FROM customers", 1, T).await?;
    wait_count(&us_c, "SELECT 1 FROM customers", 2, T).await?;
    wait_count(&fra_c, "SELECT 1 FROM customers", 1, T).await?;
    assert_eq!(
        count(
            &la_c,
            &format!("SELECT 1 FROM customers WHERE tenant_id = '{B}'")
        )
        .await?,
        0
    );
    assert_eq!(
        count(
            &nyc_c,
            &format!("SELECT 1 FROM customers WHERE tenant_id = '{A}'")
        )
        .await?,
        0
    );
    assert_eq!(
        count(
            &fra_c,
            "SELECT 1 FROM customers WHERE name = 'Acme Packaging'"
        )
        .await?,
        0
    );

    // ---- region <-> region, second hop included: LA's and NYC's stock (arrived in us-east from
    // the edges) reaches eu-central, Frankfurt's reaches us-east; many writes on both sides.
    for (c, region, facility, tenant) in [
        (&la_c, "us-east", LA, A),
        (&nyc_c, "us-east", NYC, B),
        (&fra_c, "eu-central", FRA, A),
    ] {
        c.batch_execute(&format!(
            "INSERT INTO inventory_levels (region, facility_id, product_id, tenant_id, quantity)
             SELECT '{region}', '{facility}', gen_random_uuid(), '{tenant}', g FROM generate_series(1, 50) g"
        ))
        .await?;
    }
    exec(
        &us_c,
        &format!(
            "INSERT INTO facility_status (region, facility_id, tenant_id, online, last_sync)
         VALUES ('us-east', '{LA}', '{A}', true, now()), ('us-east', '{NYC}', '{B}', true, now())"
        ),
    )
    .await?;
    exec(&eu_c, &format!(
        "INSERT INTO facility_status (region, facility_id, tenant_id, online, last_sync) VALUES ('eu-central', '{FRA}', '{A}', false, now())"
    ))
    .await?;
    for round in 0..20 {
        for c in [&la_c, &nyc_c, &fra_c] {
            c.batch_execute(&format!(
                "UPDATE inventory_levels SET quantity = quantity + {round}, last_updated = now() WHERE quantity::int % 7 = {}",
                round % 7
            ))
            .await?;
        }
        exec(
            &us_c,
            "UPDATE facility_status SET last_sync = now(), updated_at = now() WHERE region = 'us-east'",
        )
        .await?;
        exec(
            &eu_c,
            "UPDATE facility_status SET online = NOT online, updated_at = now() WHERE region = 'eu-central'",
        )
        .await?;
    }
    // Markers written last on every publisher; when all are visible everywhere, the rest is too.
    exec(&la_c, &format!(
        "INSERT INTO inventory_levels (region, facility_id, product_id, tenant_id) VALUES ('us-east', '{LA}', gen_random_uuid(), '{A}')"
    ))
    .await?;
    exec(&fra_c, &format!(
        "INSERT INTO inventory_levels (region, facility_id, product_id, tenant_id) VALUES ('eu-central', '{FRA}', gen_random_uuid(), '{A}')"
    ))
    .await?;
    for c in [&us_c, &eu_c] {
        wait_count(c, "SELECT 1 FROM inventory_levels", 152, T).await?;
        wait_count(c, "SELECT 1 FROM facility_status", 3, T).await?;
    }
    let order = "region, facility_id, product_id";
    for (table, key) in [
        ("inventory_levels", order),
        ("facility_status", "region, facility_id"),
    ] {
        let us_sum = checksum(&us_c, table, "true", key).await?;
        let eu_sum = checksum(&eu_c, table, "true", key).await?;
        assert_eq!(
            us_sum, eu_sum,
            "{table} differs between us-east and eu-central"
        );
    }
    let la_sum = checksum(&la_c, "inventory_levels", "true", order).await?;
    assert_eq!(
        la_sum,
        checksum(
            &eu_c,
            "inventory_levels",
            &format!("facility_id = '{LA}'"),
            order
        )
        .await?
    );

    // ---- ownership guards: local writes to rows another node owns are refused.
    let refused = |r: Result<(), tokio_postgres::Error>| {
        let e = r.expect_err("write must be refused");
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(msg.contains("refused"), "unexpected error: {e:?}");
        msg
    };
    let msg = refused(
        la_c.batch_execute(&format!(
            "INSERT INTO customers (tenant_id, name) VALUES ('{A}', 'x')"
        ))
        .await,
    );
    assert!(
        msg.contains("node la (edge) does not own rows of master data"),
        "{msg}"
    );
    refused(la_c.batch_execute(&format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{NYC}', '{B}', 'x')")).await);
    refused(
        us_c.batch_execute(&format!(
            "UPDATE orders SET status = 'void' WHERE facility_id = '{LA}'"
        ))
        .await,
    );
    refused(
        us_c.batch_execute(
            "INSERT INTO customers (tenant_id, name) VALUES ('tenant-foo-inc', 'x')",
        )
        .await,
    );
    refused(
        us_c.batch_execute(&format!(
            "DELETE FROM facility_status WHERE facility_id = '{FRA}'"
        ))
        .await,
    );
    let e = la_c
        .batch_execute("TRUNCATE orders")
        .await
        .expect_err("truncate must be refused");
    assert!(
        e.as_db_error().unwrap().message().contains("TRUNCATE"),
        "{e:?}"
    );
    let e = la_c
        .batch_execute(&format!(
            "UPDATE orders SET facility_id = '{NYC}' WHERE facility_id = '{LA}'"
        ))
        .await
        .expect_err("moving a row out of its filter must be refused");
    assert!(
        e.as_db_error().unwrap().message().contains("never change"),
        "{e:?}"
    );

    for (name, c, cluster) in [
        ("us-east", &us_c, &us),
        ("eu-central", &eu_c, &eu),
        ("la", &la_c, &la),
        ("nyc", &nyc_c, &nyc),
        ("fra", &fra_c, &fra),
    ] {
        let log = cluster.log();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        let (apply, sync) = subscription_error_counts(c).await?;
        assert_eq!(
            apply,
            0,
            "{name} reports apply errors:\n{}",
            errors.join("\n")
        );
        // A table-sync worker that lost its first connection under load retries and finds the
        // slot it had asked for ("already exists"): PostgreSQL drops it and starts over, and the
        // checksums above show nothing was lost. Any other sync error fails the test.
        let other_sync_errors: Vec<&&str> = errors
            .iter()
            .filter(|l| !l.contains("agog:") && !l.contains("already exists"))
            .collect();
        assert!(
            sync == 0 || other_sync_errors.is_empty(),
            "{name} reports {sync} table-sync errors:\n{}",
            errors.join("\n")
        );
    }
    let _ = usm_c;
    Ok(())
}
