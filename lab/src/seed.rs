//! The lab's data: master data written where it is owned (each regional, the shared layout),
//! inventory written where it is counted (each edge). Product ids are derived from tenant and
//! SKU (`md5(tenant/sku)::uuid`), so both regions and every edge agree on them.

use std::time::Duration;

use agog_tests::wait_until;
use tokio_postgres::Client;

use crate::layout::{CUSTOMERS, PRODUCTS, TENANTS};
use crate::state::EdgeState;

/// Connect, retrying while the server starts.
pub async fn connect(conninfo: &str, timeout: Duration) -> anyhow::Result<Client> {
    wait_until(&format!("connect to {conninfo}"), timeout, || async {
        Ok(sync_core::connect(conninfo).await.ok())
    })
    .await
}

/// Wait until the reconciler has made the regional the owner of master data (the ownership
/// guard refuses writes before): in the shared layout that is once it publishes master data
/// to an edge, i.e. after the first enrollment.
pub async fn wait_owns_master(db: &Client, what: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_until(&format!("{what} to own master data"), timeout, || async {
        let ok = db
            .query_opt(
                "SELECT 1 FROM agog_sync.node_identity WHERE owns_master",
                &[],
            )
            .await
            .ok()
            .flatten()
            .is_some();
        Ok(ok.then_some(()))
    })
    .await
}

pub async fn master_data(db: &Client) -> anyhow::Result<()> {
    for (tenant, sku, name, _) in PRODUCTS {
        db.execute(
            "INSERT INTO public.products (tenant_id, id, sku, name, description)
             VALUES ($1, md5($1 || '/' || $2)::uuid, $2, $3, 'seeded by the lab')
             ON CONFLICT DO NOTHING",
            &[tenant, sku, name],
        )
        .await?;
    }
    for (tenant, name, email) in CUSTOMERS {
        db.execute(
            "INSERT INTO public.customers (tenant_id, id, name, email)
             VALUES ($1, md5($1 || '/customer/' || $2)::uuid, $2, $3)
             ON CONFLICT DO NOTHING",
            &[tenant, name, email],
        )
        .await?;
    }
    for tenant in TENANTS {
        db.execute(
            "INSERT INTO public.system_configuration (tenant_id, key, value)
             VALUES ($1, 'currency', '\"USD\"') ON CONFLICT DO NOTHING",
            &[tenant],
        )
        .await?;
    }
    Ok(())
}

/// The facility's starting stock: every product of its tenant.
pub async fn inventory(db: &Client, e: &EdgeState) -> anyhow::Result<()> {
    for (tenant, sku, _, qty) in PRODUCTS.iter().filter(|p| p.0 == e.tenant) {
        db.execute(
            "INSERT INTO public.inventory_levels (region, facility_id, product_id, tenant_id, quantity)
             VALUES ($1, $2, md5($3 || '/' || $4)::uuid, $3, $5::float8)
             ON CONFLICT DO NOTHING",
            &[&e.region, &e.facility, tenant, sku, &(*qty as f64)],
        )
        .await
        .map_err(|err| anyhow::anyhow!("seed inventory on {}: {}", e.facility, sync_core::apply::describe(&err)))?;
    }
    Ok(())
}

/// One round of a facility's work: a pick or a receipt of a random product (the transaction and
/// the new level, together), and now and then an order.
pub async fn edge_work(db: &mut Client, e: &EdgeState, round: u64) -> anyhow::Result<()> {
    use rand::seq::SliceRandom;
    use rand::Rng;
    let products: Vec<_> = PRODUCTS.iter().filter(|p| p.0 == e.tenant).collect();
    let (tenant, sku, _, _) = **products.choose(&mut rand::thread_rng()).expect("products");
    let (kind, delta) = if rand::thread_rng().gen_bool(0.7) {
        ("pick", -(rand::thread_rng().gen_range(1..=12) as f64))
    } else {
        ("receipt", rand::thread_rng().gen_range(20..=200) as f64)
    };
    let tx = db.transaction().await?;
    tx.execute(
        "INSERT INTO public.inventory_transactions (facility_id, tenant_id, product_id, kind, quantity)
         VALUES ($1, $2, md5($2 || '/' || $3)::uuid, $4, $5::float8)",
        &[&e.facility, &tenant, &sku, &kind, &delta],
    )
    .await?;
    tx.execute(
        "UPDATE public.inventory_levels SET quantity = greatest(0, quantity + $4::float8::numeric), last_updated = now()
          WHERE region = $1 AND facility_id = $2 AND product_id = md5($3 || '/' || $5)::uuid",
        &[&e.region, &e.facility, &tenant, &delta, &sku],
    )
    .await?;
    if round % 5 == 0 {
        tx.execute(
            "INSERT INTO public.orders (facility_id, tenant_id, order_number, total)
             VALUES ($1, $2, 'LAB-' || to_char(now(), 'YYYYMMDD-HH24MISS-MS'), $3::float8)",
            &[
                &e.facility,
                &tenant,
                &(rand::thread_rng().gen_range(10..2000) as f64),
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One round of a region's work: a product's description changes (master data, down to the
/// edges of its tenant).
pub async fn region_work(db: &Client) -> anyhow::Result<()> {
    use rand::seq::SliceRandom;
    let (tenant, sku, _, _) = PRODUCTS.choose(&mut rand::thread_rng()).expect("products");
    db.execute(
        "UPDATE public.products SET description = 'price list of ' || to_char(now(), 'HH24:MI:SS'),
                updated_at = now()
          WHERE tenant_id = $1 AND sku = $2",
        &[tenant, sku],
    )
    .await?;
    Ok(())
}
