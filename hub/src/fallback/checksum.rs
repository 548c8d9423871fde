//! Whether two nodes hold the same rows of a facility: per restore table, the row count and a
//! sum of 60-bit hashes of each row's text. Order-independent and constant in memory, so it
//! works on months of a facility's data; computed by the same query on both sides.

use std::collections::BTreeMap;

use sync_core::sql::ident;
use tokio_postgres::Client;

use super::workspace::operational_tables;

/// `table -> (rows, hash sum)`.
pub type Checksums = BTreeMap<String, (i64, String)>;

pub async fn facility(db: &Client, facility: &str) -> Result<Checksums, tokio_postgres::Error> {
    // Row text depends on these settings; both sides must print rows the same way.
    db.batch_execute(
        "SET TIME ZONE 'UTC'; SET datestyle = 'ISO, YMD'; SET intervalstyle = 'postgres'; SET extra_float_digits = 3",
    )
    .await?;
    let mut sums = Checksums::new();
    for t in operational_tables() {
        let r = db
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)::text
                       FROM public.{} t WHERE facility_id = $1",
                    ident(&t)
                ),
                &[&facility],
            )
            .await?;
        sums.insert(t, (r.get(0), r.get(1)));
    }
    Ok(sums)
}

/// A line per table that differs, e.g. `orders: 120 rows here, 118 there`.
pub fn differences(here: &Checksums, there: &Checksums) -> Vec<String> {
    here.iter()
        .filter_map(|(t, (n, h))| match there.get(t) {
            Some((m, g)) if m == n && g == h => None,
            Some((m, _)) if m != n => {
                Some(format!("{t}: {n} rows in the regional, {m} on the edge"))
            }
            Some(_) => Some(format!("{t}: {n} rows on both, with different values")),
            None => Some(format!("{t}: not read on the edge")),
        })
        .collect()
}
