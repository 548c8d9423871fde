//! The workspace: PostgreSQL's own isolation in the regional database. One LOGIN role per
//! facility in fallback, and row-level security on the tables it may touch: its facility's
//! operational rows (read and write) and its tenant's master data (read). Its rows stay in the
//! very tables the regional publishes and the restore reads, so nothing is copied in or out,
//! other regions keep receiving the facility's stock, and a rebuilt edge gets exactly them.
//!
//! Every table involved gets row-level security once, with a permissive policy for everyone
//! (`agog_everyone`), so nothing changes for any other role; each workspace adds a
//! *restrictive* policy for its own role, which PostgreSQL ANDs with it. The table owner (the
//! hub) and the replication apply workers (superuser subscriptions) are not subject to it.
//!
//! The rebuilt edge's role (`agog_edge_<facility>`) gets the same treatment while it copies:
//! SELECT on the restore tables, restricted to its facility.

use sync_core::sql::{ident, literal};
use sync_core::FacilityId;
use tokio_postgres::GenericClient;

use crate::enroll::master_tables;

/// The facility's workspace role.
pub fn role(facility: &FacilityId) -> String {
    format!("agog_ws_{}", facility.ident_part())
}

/// The restrictive policy of a facility's restore access.
fn restore_policy(facility: &FacilityId) -> String {
    format!("agog_restore_{}", facility.ident_part())
}

/// Operational tables a workspace writes: the restore group's tables in `public`.
pub fn operational_tables() -> Vec<String> {
    restore_tables()
        .into_iter()
        .filter(|t| !t.contains('.'))
        .collect()
}

/// What the restore publication carries (`sync_core::spec` group `restore`).
pub fn restore_tables() -> Vec<String> {
    sync_core::spec::default_groups()
        .into_iter()
        .find(|g| g.name == sync_core::spec::RESTORE_GROUP)
        .map(|g| g.tables)
        .unwrap_or_default()
}

fn qualified(t: &str) -> String {
    match t.split_once('.') {
        Some((s, n)) => format!("{}.{}", ident(s), ident(n)),
        None => format!("public.{}", ident(t)),
    }
}

const OVERRIDES: &str = "agog_sync.ownership_overrides";

/// Whether `table` has the policy `name`. Checked before any policy DDL: CREATE and DROP POLICY
/// lock the table exclusively, even when there is nothing to do.
async fn has_policy(
    db: &impl GenericClient,
    table: &str,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM pg_policy WHERE polrelid = $1::text::regclass AND polname = $2",
            &[&table, &name],
        )
        .await?
        .is_some())
}

/// Row-level security with an allow-all policy on every table a workspace or a restore role
/// touches. Idempotent, and changes (locks) nothing once done.
pub async fn ensure_row_security(db: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    let mut tables: Vec<String> = restore_tables();
    tables.extend(master_tables());
    for t in tables {
        let q = qualified(&t);
        if !has_policy(db, &q, "agog_everyone").await? {
            db.batch_execute(&format!(
                "CREATE POLICY agog_everyone ON {q} AS PERMISSIVE FOR ALL TO PUBLIC USING (true) WITH CHECK (true)"
            ))
            .await?;
        }
        let enabled: bool = db
            .query_one(
                "SELECT relrowsecurity FROM pg_class WHERE oid = $1::text::regclass",
                &[&q],
            )
            .await?
            .get(0);
        if !enabled {
            db.batch_execute(&format!("ALTER TABLE {q} ENABLE ROW LEVEL SECURITY"))
                .await?;
        }
    }
    Ok(())
}

/// `DROP POLICY IF EXISTS` + `CREATE POLICY`, in one transaction so the policy is never missing.
fn replace_policy(name: &str, table: &str, rest: &str) -> String {
    format!(
        "DROP POLICY IF EXISTS {n} ON {table}; CREATE POLICY {n} ON {table} AS RESTRICTIVE {rest};",
        n = ident(name)
    )
}

async fn role_exists(db: &impl GenericClient, role: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(db
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some())
}

/// Create the workspace role (with `password`, or a random one the operator resets later), its
/// grants and its policies. Idempotent: an existing role keeps its password unless one is given.
pub async fn open(
    db: &mut tokio_postgres::Client,
    facility: &FacilityId,
    tenant: &str,
    password: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    ensure_row_security(&*db).await?;
    let r = role(facility);
    let tx = db.transaction().await?;
    if !role_exists(&tx, &r).await? {
        let pw = password
            .map(str::to_owned)
            .unwrap_or_else(crate::enroll::new_password);
        tx.batch_execute(&format!(
            "CREATE ROLE {} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}",
            ident(&r),
            literal(&pw)
        ))
        .await?;
    } else if let Some(pw) = password {
        set_password(&tx, &r, pw).await?;
    }
    let ops: Vec<String> = operational_tables().iter().map(|t| qualified(t)).collect();
    let master: Vec<String> = master_tables().iter().map(|t| qualified(t)).collect();
    let f = literal(facility.as_str());
    let mut sql = format!(
        "GRANT USAGE ON SCHEMA public, agog_sync TO {ri};
         GRANT SELECT, INSERT, UPDATE, DELETE ON {ops} TO {ri};
         GRANT SELECT ON {master} TO {ri};
         -- The ownership guard runs as the writer: it reads who this node is and the override.
         GRANT SELECT ON agog_sync.node_identity, {OVERRIDES} TO {ri};",
        ri = ident(&r),
        ops = ops.join(", "),
        master = master.join(", "),
    );
    for t in &ops {
        sql.push_str(&replace_policy(
            &r,
            t,
            &format!(
                "FOR ALL TO {} USING (facility_id = {f}) WITH CHECK (facility_id = {f})",
                ident(&r)
            ),
        ));
    }
    for t in &master {
        sql.push_str(&replace_policy(
            &r,
            t,
            &format!(
                "FOR SELECT TO {} USING (tenant_id = {})",
                ident(&r),
                literal(tenant)
            ),
        ));
    }
    sql.push_str(&replace_policy(
        &r,
        OVERRIDES,
        &format!("FOR SELECT TO {} USING (facility_id = {f})", ident(&r)),
    ));
    tx.batch_execute(&sql).await?;
    tx.commit().await
}

pub async fn set_password(
    db: &impl GenericClient,
    role: &str,
    password: &str,
) -> Result<(), tokio_postgres::Error> {
    db.batch_execute(&format!(
        "ALTER ROLE {} PASSWORD {}",
        ident(role),
        literal(password)
    ))
    .await
}

pub async fn exists(
    db: &impl GenericClient,
    facility: &FacilityId,
) -> Result<bool, tokio_postgres::Error> {
    role_exists(db, &role(facility)).await
}

/// End the role's sessions, so no transaction that began before a change of its rights lives on.
async fn end_sessions(db: &impl GenericClient, role: &str) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
        &[&role],
    )
    .await?;
    Ok(())
}

/// Reads only from now on: write rights revoked, then every open session ended (a transaction
/// that began writing before the revoke cannot commit after it).
pub async fn make_read_only(
    db: &impl GenericClient,
    facility: &FacilityId,
) -> Result<(), tokio_postgres::Error> {
    let r = role(facility);
    if !role_exists(db, &r).await? {
        return Ok(());
    }
    let ops: Vec<String> = operational_tables().iter().map(|t| qualified(t)).collect();
    db.batch_execute(&format!(
        "REVOKE INSERT, UPDATE, DELETE ON {} FROM {}",
        ops.join(", "),
        ident(&r)
    ))
    .await?;
    end_sessions(db, &r).await
}

/// Whether the workspace can still write (for status and tests).
pub async fn writable(
    db: &impl GenericClient,
    facility: &FacilityId,
) -> Result<bool, tokio_postgres::Error> {
    let r = role(facility);
    if !role_exists(db, &r).await? {
        return Ok(false);
    }
    Ok(db
        .query_one(
            "SELECT has_table_privilege($1, 'public.orders', 'INSERT')",
            &[&r],
        )
        .await?
        .get(0))
}

/// Remove the workspace: sessions, policies, grants, role. Idempotent.
pub async fn close(
    db: &mut tokio_postgres::Client,
    facility: &FacilityId,
) -> Result<(), tokio_postgres::Error> {
    let r = role(facility);
    if !role_exists(&*db, &r).await? {
        return Ok(());
    }
    end_sessions(&*db, &r).await?;
    let mut tables: Vec<String> = restore_tables();
    tables.extend(master_tables());
    let mut sql = String::new();
    for t in tables {
        let q = qualified(&t);
        if has_policy(&*db, &q, &r).await? {
            sql.push_str(&format!("DROP POLICY {} ON {q};", ident(&r)));
        }
    }
    sql.push_str(&format!("DROP OWNED BY {r}; DROP ROLE {r};", r = ident(&r)));
    let tx = db.transaction().await?;
    tx.batch_execute(&sql).await?;
    tx.commit().await
}

/// Whether the rebuilt edge's role has its restore access already (then there is nothing to
/// do, and nothing is locked).
async fn has_restore_access(
    db: &impl GenericClient,
    tables: &[String],
    policy: &str,
    edge_role: &str,
) -> Result<bool, tokio_postgres::Error> {
    if !role_exists(db, edge_role).await? {
        return Ok(false);
    }
    for t in tables {
        let granted: bool = db
            .query_one(
                "SELECT has_table_privilege($1, $2, 'SELECT')",
                &[&edge_role, t],
            )
            .await?
            .get(0);
        if !granted || !has_policy(db, t, policy).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Let the rebuilt edge's role read (only) its facility's rows of the restore tables, for the
/// initial copy of its restore subscription. Idempotent.
pub async fn grant_restore(
    db: &mut tokio_postgres::Client,
    facility: &FacilityId,
    edge_role: &str,
) -> Result<(), tokio_postgres::Error> {
    let tables: Vec<String> = restore_tables().iter().map(|t| qualified(t)).collect();
    let p = restore_policy(facility);
    if has_restore_access(&*db, &tables, &p, edge_role).await? {
        return Ok(());
    }
    ensure_row_security(&*db).await?;
    let mut sql = format!(
        "GRANT USAGE ON SCHEMA public, agog_sync TO {r}; GRANT SELECT ON {t} TO {r};",
        r = ident(edge_role),
        t = tables.join(", ")
    );
    for t in &tables {
        sql.push_str(&replace_policy(
            &p,
            t,
            &format!(
                "FOR SELECT TO {} USING (facility_id = {})",
                ident(edge_role),
                literal(facility.as_str())
            ),
        ));
    }
    let tx = db.transaction().await?;
    tx.batch_execute(&sql).await?;
    tx.commit().await
}

/// Take the restore rights back (the role itself stays: in the shared layout it is the edge's
/// master-data role). Idempotent.
pub async fn revoke_restore(
    db: &mut tokio_postgres::Client,
    facility: &FacilityId,
    edge_role: &str,
) -> Result<(), tokio_postgres::Error> {
    let tables: Vec<String> = restore_tables().iter().map(|t| qualified(t)).collect();
    let p = restore_policy(facility);
    let mut sql = String::new();
    for t in &tables {
        if has_policy(&*db, t, &p).await? {
            sql.push_str(&format!("DROP POLICY {} ON {t};", ident(&p)));
        }
    }
    let granted = role_exists(&*db, edge_role).await?
        && db
            .query_one(
                "SELECT has_table_privilege($1, 'public.orders', 'SELECT')",
                &[&edge_role],
            )
            .await?
            .get::<_, bool>(0);
    if granted {
        let ops: Vec<String> = operational_tables().iter().map(|t| qualified(t)).collect();
        sql.push_str(&format!(
            "REVOKE SELECT ON {ops}, {OVERRIDES} FROM {r}; REVOKE USAGE ON SCHEMA agog_sync FROM {r};",
            ops = ops.join(", "),
            r = ident(edge_role)
        ));
    }
    if sql.is_empty() {
        return Ok(());
    }
    let tx = db.transaction().await?;
    tx.batch_execute(&sql).await?;
    tx.commit().await
}
