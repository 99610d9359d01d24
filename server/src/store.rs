//! The daemon's records, in SQLite: numbered migrations, WAL, one
//! connection owned by the daemon.
//!
//! This module stores and loads; it decides nothing about lifecycles.
//! **Invariant:** a VM row exists only while the VM's files may exist: rows
//! are inserted after validation and removed by delete or by the rollback of
//! a failed create.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::spec::VmSpec;
use crate::workspace::sync::{HostStat, Kind, SyncedFile};

/// Schema changes, applied in order; `PRAGMA user_version` is the count
/// applied. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: VMs.
    "CREATE TABLE vms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        vcpu INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        disk_bytes INTEGER NOT NULL,
        image_id TEXT NOT NULL,
        image_name TEXT NOT NULL,
        vmm TEXT NOT NULL,
        accel TEXT,
        accel_reason TEXT,
        pid INTEGER,
        pid_start_time INTEGER,
        boot_id TEXT,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );",
    // 2: why the VMM was chosen, and which kernel the VM booted.
    "ALTER TABLE vms ADD COLUMN vmm_reason TEXT;
     ALTER TABLE vms ADD COLUMN kernel TEXT;",
    // 3: a kernel from the catalog instead of the image's.
    "ALTER TABLE vms ADD COLUMN kernel_id TEXT;",
    // 4: the workspace shipped into the guest.
    "ALTER TABLE vms ADD COLUMN workspace_path TEXT;
     ALTER TABLE vms ADD COLUMN workspace_head TEXT;
     ALTER TABLE vms ADD COLUMN workspace_source TEXT;",
    // 5: whether the workspace included untracked files (re-syncs repeat it).
    "ALTER TABLE vms ADD COLUMN workspace_untracked INTEGER NOT NULL DEFAULT 0;",
    // 6: live sync's manifest: what the guest was last given, per path, and
    // the host file's stat when it was read.
    "CREATE TABLE workspace_files (
        vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        oid TEXT NOT NULL,
        size INTEGER,
        mtime_ns INTEGER,
        ctime_ns INTEGER,
        ino INTEGER,
        PRIMARY KEY (vm_id, path)
    ) WITHOUT ROWID;",
    // 7: the root overlay's size per VM (it was a fixed 16 GiB).
    "ALTER TABLE vms ADD COLUMN overlay_bytes INTEGER NOT NULL DEFAULT 17179869184;",
    // 8: VMs that live only as long as a client's lease (`vm run --rm`, a
    // create not finished yet): removed when the lease ends, and by a
    // daemon that starts and finds them (no lease outlives its daemon).
    "CREATE TABLE vm_leases (
        vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
        lease TEXT NOT NULL
    );",
    // 9: outbound network access per VM (off unless asked).
    "ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 0;",
    // 10: the host address where a VM's ports are reachable (one per VM,
    // in 127.66.0.0/16), and its fixed port forwards (`-p`, JSON).
    "ALTER TABLE vms ADD COLUMN loopback TEXT;
     CREATE UNIQUE INDEX vms_loopback ON vms(loopback);
     ALTER TABLE vms ADD COLUMN published TEXT NOT NULL DEFAULT '[]';",
    // 11: each VM's ssh host key, as its agent reported it (known_hosts).
    "ALTER TABLE vms ADD COLUMN ssh_host_key TEXT;",
    // 12: egress rules (`--allow`, JSON): only these destinations.
    "ALTER TABLE vms ADD COLUMN allow TEXT NOT NULL DEFAULT '[]';",
    // 13: the mise version a tooling bootstrap installed (guest commands
    // in the workspace then run through `mise exec`).
    "ALTER TABLE vms ADD COLUMN tooling TEXT;",
    // 14: the project dependency cache a VM mounts (its name), if any.
    "ALTER TABLE vms ADD COLUMN cache TEXT;",
];

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The database directory could not be made.
    #[error("cannot create the state directory {path}")]
    Dir {
        /// The directory.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The database is from a newer banger.
    #[error(
        "the database has schema version {found}, newer than this banger knows ({known}); upgrade banger"
    )]
    TooNew {
        /// Version on disk.
        found: usize,
        /// Newest version known here.
        known: usize,
    },
    /// Another VM already has that name.
    #[error(
        "a vm named {0:?} already exists; pick another name or delete it with: banger vm delete {0}"
    )]
    NameTaken(String),
    /// A stored value did not parse.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Where a VM is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Not running; disks kept.
    Stopped,
    /// VMM launched, guest not yet answering.
    Starting,
    /// Guest answering.
    Running,
    /// Being stopped.
    Stopping,
    /// A start failed; see `last_error`.
    Error,
}

impl VmState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Error => "error",
        }
    }

    fn parse(s: &str) -> Result<VmState, StoreError> {
        Ok(match s {
            "stopped" => VmState::Stopped,
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "stopping" => VmState::Stopping,
            "error" => VmState::Error,
            other => return Err(StoreError::Corrupt(format!("vm state {other:?}"))),
        })
    }

    /// Whether a VMM process may exist in this state.
    pub fn may_have_process(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Stopping
        )
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One VM as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Stable id (hex), used for file names.
    pub id: String,
    /// Unique user-facing name.
    pub name: String,
    /// Lifecycle state.
    pub state: VmState,
    /// Resources.
    pub spec: VmSpec,
    /// Image it was created from.
    pub image_id: String,
    /// That image's name at the time.
    pub image_name: String,
    /// VMM driver name.
    pub vmm: String,
    /// Why that VMM was chosen.
    pub vmm_reason: Option<String>,
    /// The kernel of the last boot (its file).
    pub kernel: Option<String>,
    /// Catalog kernel to boot instead of the image's.
    pub kernel_id: Option<String>,
    /// The prepared workspace in the guest, if any.
    pub workspace: Option<WorkspaceRecord>,
    /// Accelerator of the last start (`kvm`, `tcg`).
    pub accel: Option<String>,
    /// Why that accelerator was chosen.
    pub accel_reason: Option<String>,
    /// VMM process id while one may exist.
    pub pid: Option<i32>,
    /// That process's start time (clock ticks since boot), guarding against
    /// pid reuse.
    pub pid_start_time: Option<u64>,
    /// Guest boot id of the current boot.
    pub boot_id: Option<String>,
    /// Why the last operation failed.
    pub last_error: Option<String>,
    /// Outbound network access (`--nat`).
    pub nat: bool,
    /// The host address where its ports are reachable (127.66.0.0/16).
    pub loopback: Option<std::net::Ipv4Addr>,
    /// Fixed port forwards (`-p`).
    pub published: Vec<crate::net::PortMapping>,
    /// Egress rules (`--allow`): only these destinations.
    pub allow: Vec<crate::net::egress::AllowRule>,
    /// The mise version its tooling bootstrap installed, if any.
    pub tooling: Option<String>,
    /// The project dependency cache it mounts (`cache::` name), if any.
    pub cache: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl VmRecord {
    /// What the guest may reach.
    pub fn egress(&self) -> crate::net::Egress {
        crate::net::Egress {
            nat: self.nat,
            allow: self.allow.clone(),
        }
    }
}

/// A workspace shipped into a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    /// Path in the guest.
    pub guest_path: String,
    /// Host HEAD it was prepared from.
    pub head: Option<String>,
    /// Host repository root.
    pub source: String,
    /// Untracked files were included.
    #[serde(default)]
    pub include_untracked: bool,
}

/// The database.
pub struct Store {
    conn: Connection,
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if missing, which is normal on a fresh install) and
    /// migrates the database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            crate::paths::Dirs::ensure_private(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        Store::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // In-memory databases answer "memory"; that is fine.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: usize =
            self.conn
                .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize)
    }

    /// Inserts a new VM; fails with `NameTaken` on a duplicate name.
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        let res = self.conn.execute(
            "INSERT INTO vms (id, name, state, vcpu, memory_mib, disk_bytes, image_id, image_name,
                vmm, accel, accel_reason, pid, pid_start_time, boot_id, last_error, created_at, updated_at,
                vmm_reason, kernel, kernel_id, overlay_bytes, nat, loopback, published, allow)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
            params![
                vm.id,
                vm.name,
                vm.state.as_str(),
                vm.spec.vcpu,
                vm.spec.memory_mib as i64,
                vm.spec.disk_bytes as i64,
                vm.image_id,
                vm.image_name,
                vm.vmm,
                vm.accel,
                vm.accel_reason,
                vm.pid,
                vm.pid_start_time.map(|t| t as i64),
                vm.boot_id,
                vm.last_error,
                vm.created_at,
                vm.updated_at,
                vm.vmm_reason,
                vm.kernel,
                vm.kernel_id,
                vm.spec.overlay_bytes as i64,
                vm.nat,
                vm.loopback.map(|a| a.to_string()),
                serde_json::to_string(&vm.published).unwrap_or_else(|_| "[]".into()),
                serde_json::to_string(&vm.allow).unwrap_or_else(|_| "[]".into()),
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::NameTaken(vm.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Saves every mutable field of a VM.
    pub fn update_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE vms SET state=?2, vcpu=?3, memory_mib=?4, disk_bytes=?5, vmm=?6, accel=?7,
                accel_reason=?8, pid=?9, pid_start_time=?10, boot_id=?11, last_error=?12, updated_at=?13,
                vmm_reason=?14, kernel=?15, nat=?16, loopback=?17, allow=?18
             WHERE id=?1",
            params![
                vm.id,
                vm.state.as_str(),
                vm.spec.vcpu,
                vm.spec.memory_mib as i64,
                vm.spec.disk_bytes as i64,
                vm.vmm,
                vm.accel,
                vm.accel_reason,
                vm.pid,
                vm.pid_start_time.map(|t| t as i64),
                vm.boot_id,
                vm.last_error,
                now(),
                vm.vmm_reason,
                vm.kernel,
                vm.nat,
                vm.loopback.map(|a| a.to_string()),
                serde_json::to_string(&vm.allow).unwrap_or_else(|_| "[]".into()),
            ],
        )?;
        Ok(())
    }

    /// Records a VM's workspace. Separate from [`Store::update_vm`], so a
    /// lifecycle write made from an older copy of the record cannot undo a
    /// prepare that finished meanwhile.
    pub fn set_workspace(&self, id: &str, ws: Option<&WorkspaceRecord>) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE vms SET workspace_path=?2, workspace_head=?3, workspace_source=?4,
                workspace_untracked=?5, updated_at=?6 WHERE id=?1",
            params![
                id,
                ws.map(|w| w.guest_path.clone()),
                ws.and_then(|w| w.head.clone()),
                ws.map(|w| w.source.clone()),
                ws.is_some_and(|w| w.include_untracked),
                now(),
            ],
        )?;
        Ok(())
    }

    /// Records which project cache a VM mounts.
    pub fn set_cache(&self, id: &str, cache: Option<&str>) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE vms SET cache=?2 WHERE id=?1", params![id, cache])?;
        Ok(())
    }

    /// Records the mise version a VM's tooling bootstrap installed.
    pub fn set_tooling(&self, id: &str, version: Option<&str>) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE vms SET tooling=?2 WHERE id=?1",
            params![id, version],
        )?;
        Ok(())
    }

    /// Records a VM's ssh host key.
    pub fn set_ssh_host_key(&self, id: &str, key: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE vms SET ssh_host_key=?2 WHERE id=?1",
            params![id, key],
        )?;
        Ok(())
    }

    /// (name, ssh host key) of every VM whose key is known.
    pub fn ssh_host_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, ssh_host_key FROM vms WHERE ssh_host_key IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// The loopback addresses VMs hold.
    pub fn loopbacks(&self) -> Result<Vec<std::net::Ipv4Addr>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT loopback FROM vms WHERE loopback IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(a) = row?.parse() {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Binds a VM to a client's lease.
    pub fn set_lease(&self, vm_id: &str, lease: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO vm_leases (vm_id, lease) VALUES (?1, ?2)",
            [vm_id, lease],
        )?;
        Ok(())
    }

    /// Unbinds a VM from its lease (it stays); whether it had one.
    pub fn clear_lease(&self, vm_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM vm_leases WHERE vm_id=?1", [vm_id])?
            > 0)
    }

    /// The VMs bound to `lease`, or to any lease when `None`.
    pub fn leased_vms(&self, lease: Option<&str>) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT vm_id FROM vm_leases WHERE ?1 IS NULL OR lease=?1 ORDER BY vm_id")?;
        let rows = stmt.query_map([lease], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The lease a VM is bound to.
    pub fn lease_of(&self, vm_id: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension as _;
        Ok(self
            .conn
            .query_row("SELECT lease FROM vm_leases WHERE vm_id=?1", [vm_id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Replaces a VM's whole sync manifest (after a full transfer).
    pub fn replace_manifest(&self, id: &str, files: &[SyncedFile]) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute("DELETE FROM workspace_files WHERE vm_id=?1", [id])?;
        upsert_files(&tx, id, files)?;
        tx.commit()?;
        Ok(())
    }

    /// Records what one sync changed: upserts and removals, together.
    pub fn update_manifest(
        &self,
        id: &str,
        upserts: &[SyncedFile],
        removed: &[String],
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        upsert_files(&tx, id, upserts)?;
        {
            let mut del =
                tx.prepare_cached("DELETE FROM workspace_files WHERE vm_id=?1 AND path=?2")?;
            for p in removed {
                del.execute(params![id, p])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Manifest entries for these paths (those that exist).
    pub fn manifest_entries(
        &self,
        id: &str,
        paths: &[String],
    ) -> Result<Vec<SyncedFile>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT_FILE} WHERE vm_id=?1 AND path=?2"))?;
        let mut out = Vec::new();
        for p in paths {
            if let Some(f) = stmt.query_row(params![id, p], row_to_file).optional()? {
                out.push(f?);
            }
        }
        Ok(out)
    }

    /// Whether any manifest path starts with `prefix` (a directory's
    /// `dir/`).
    pub fn manifest_has_prefix(&self, id: &str, prefix: &str) -> Result<bool, StoreError> {
        // Paths are compared as text: everything in [prefix, prefix + 0xFF).
        let upper = format!("{prefix}\u{10FFFF}");
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM workspace_files WHERE vm_id=?1 AND path>=?2 AND path<?3 LIMIT 1",
            )?
            .query_row(params![id, prefix, upper], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// A VM's whole manifest, by path.
    pub fn manifest(&self, id: &str) -> Result<Vec<SyncedFile>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT_FILE} WHERE vm_id=?1 ORDER BY path"))?;
        let rows = stmt.query_map([id], row_to_file)?;
        rows.map(|r| r?).collect()
    }

    /// Removes a VM row.
    pub fn delete_vm(&self, id: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM vms WHERE id=?1", [id])?;
        Ok(())
    }

    /// All VMs, oldest first.
    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT_VM} ORDER BY created_at, name"))?;
        let rows = stmt.query_map([], row_to_raw)?;
        rows.map(|r| raw_to_record(r?)).collect()
    }

    /// A VM by name, or by id (full, or a unique prefix of at least 4).
    pub fn find_vm(&self, name_or_id: &str) -> Result<Option<VmRecord>, StoreError> {
        match self.lookup_vm(name_or_id)? {
            VmLookup::Found(vm) => Ok(Some(*vm)),
            VmLookup::Ambiguous(_) | VmLookup::Missing => Ok(None),
        }
    }

    /// A VM by name, or by id (full, or a prefix of at least 4 hex
    /// digits); says which VMs an ambiguous prefix matches.
    pub fn lookup_vm(&self, name_or_id: &str) -> Result<VmLookup, StoreError> {
        let by_name = self
            .conn
            .query_row(
                &format!("{SELECT_VM} WHERE name=?1"),
                [name_or_id],
                row_to_raw,
            )
            .optional()?;
        if let Some(raw) = by_name {
            return raw_to_record(raw).map(|vm| VmLookup::Found(Box::new(vm)));
        }
        if name_or_id.len() < MIN_ID_PREFIX || !name_or_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(VmLookup::Missing);
        }
        let mut stmt = self.conn.prepare(&format!(
            "{SELECT_VM} WHERE id LIKE ?1 || '%' ORDER BY name"
        ))?;
        let mut rows: Vec<RawVm> = stmt
            .query_map([name_or_id], row_to_raw)?
            .collect::<Result<_, _>>()?;
        match rows.len() {
            0 => Ok(VmLookup::Missing),
            1 => raw_to_record(rows.remove(0)).map(|vm| VmLookup::Found(Box::new(vm))),
            _ => Ok(VmLookup::Ambiguous(
                rows.into_iter().map(|(vm, _)| (vm.name, vm.id)).collect(),
            )),
        }
    }
}

/// The shortest id prefix that names a VM.
pub const MIN_ID_PREFIX: usize = 4;

/// What a VM name or id prefix resolves to.
#[derive(Debug)]
pub enum VmLookup {
    /// Exactly this VM.
    Found(Box<VmRecord>),
    /// An id prefix several VMs share: their (name, id).
    Ambiguous(Vec<(String, String)>),
    /// None.
    Missing,
}

const SELECT_VM: &str =
    "SELECT id, name, state, vcpu, memory_mib, disk_bytes, image_id, image_name,
    vmm, accel, accel_reason, pid, pid_start_time, boot_id, last_error, created_at, updated_at,
    vmm_reason, kernel, kernel_id, workspace_path, workspace_head, workspace_source,
    workspace_untracked, overlay_bytes, nat, loopback, published, allow, tooling, cache FROM vms";

type RawVm = (VmRecord, String);

const SELECT_FILE: &str =
    "SELECT path, kind, oid, size, mtime_ns, ctime_ns, ino FROM workspace_files";

fn row_to_file(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<SyncedFile, StoreError>> {
    let kind: String = r.get(1)?;
    let size: Option<i64> = r.get(3)?;
    let stat = match (
        size,
        r.get::<_, Option<i64>>(4)?,
        r.get::<_, Option<i64>>(5)?,
        r.get::<_, Option<i64>>(6)?,
    ) {
        (Some(size), Some(mtime_ns), Some(ctime_ns), Some(ino)) => Some(HostStat {
            size: size as u64,
            mtime_ns,
            ctime_ns,
            ino: ino as u64,
        }),
        _ => None,
    };
    let path: String = r.get(0)?;
    let oid: String = r.get(2)?;
    Ok(
        serde_json::from_value::<Kind>(serde_json::Value::String(kind.clone()))
            .map_err(|_| StoreError::Corrupt(format!("file kind {kind:?}")))
            .map(|kind| SyncedFile {
                path,
                kind,
                oid,
                stat,
            }),
    )
}

fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Executable => "executable",
        Kind::Symlink => "symlink",
    }
}

fn upsert_files(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    files: &[SyncedFile],
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO workspace_files (vm_id, path, kind, oid, size, mtime_ns, ctime_ns, ino)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for f in files {
        let st = f.stat;
        stmt.execute(params![
            id,
            f.path,
            kind_str(f.kind),
            f.oid,
            st.map(|s| s.size as i64),
            st.map(|s| s.mtime_ns),
            st.map(|s| s.ctime_ns),
            st.map(|s| s.ino as i64),
        ])?;
    }
    Ok(())
}

fn row_to_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawVm> {
    let state: String = r.get(2)?;
    Ok((
        VmRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            state: VmState::Stopped,
            spec: VmSpec {
                vcpu: r.get(3)?,
                memory_mib: r.get::<_, i64>(4)? as u64,
                disk_bytes: r.get::<_, i64>(5)? as u64,
                overlay_bytes: r.get::<_, i64>(24)? as u64,
            },
            image_id: r.get(6)?,
            image_name: r.get(7)?,
            vmm: r.get(8)?,
            accel: r.get(9)?,
            accel_reason: r.get(10)?,
            pid: r.get(11)?,
            pid_start_time: r.get::<_, Option<i64>>(12)?.map(|t| t as u64),
            boot_id: r.get(13)?,
            last_error: r.get(14)?,
            nat: r.get(25)?,
            loopback: r.get::<_, Option<String>>(26)?.and_then(|a| a.parse().ok()),
            published: serde_json::from_str(&r.get::<_, String>(27)?).unwrap_or_default(),
            allow: serde_json::from_str(&r.get::<_, String>(28)?).unwrap_or_default(),
            tooling: r.get(29)?,
            cache: r.get(30)?,
            created_at: r.get(15)?,
            updated_at: r.get(16)?,
            vmm_reason: r.get(17)?,
            kernel: r.get(18)?,
            kernel_id: r.get(19)?,
            workspace: match (
                r.get::<_, Option<String>>(20)?,
                r.get::<_, Option<String>>(22)?,
            ) {
                (Some(guest_path), Some(source)) => Some(WorkspaceRecord {
                    guest_path,
                    head: r.get(21)?,
                    source,
                    include_untracked: r.get(23)?,
                }),
                _ => None,
            },
        },
        state,
    ))
}

fn raw_to_record((mut vm, state): RawVm) -> Result<VmRecord, StoreError> {
    vm.state = VmState::parse(&state)?;
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> VmRecord {
        VmRecord {
            id: id.into(),
            name: name.into(),
            state: VmState::Stopped,
            spec: VmSpec::default(),
            image_id: "img".into(),
            image_name: "debian-bookworm".into(),
            vmm: "qemu".into(),
            vmm_reason: None,
            kernel: None,
            kernel_id: None,
            workspace: None,
            accel: None,
            accel_reason: None,
            pid: None,
            pid_start_time: None,
            boot_id: None,
            last_error: None,
            nat: false,
            loopback: None,
            published: Vec::new(),
            allow: Vec::new(),
            tooling: None,
            cache: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn leases_bind_vms_and_go_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store.insert_vm(&record("a1", "one")).unwrap();
        store.insert_vm(&record("b2", "two")).unwrap();
        store.set_lease("a1", "L").unwrap();
        store.set_lease("b2", "M").unwrap();
        assert_eq!(store.leased_vms(Some("L")).unwrap(), vec!["a1".to_string()]);
        assert_eq!(store.leased_vms(None).unwrap().len(), 2);
        assert_eq!(store.lease_of("b2").unwrap().as_deref(), Some("M"));
        assert!(store.clear_lease("b2").unwrap());
        assert!(!store.clear_lease("b2").unwrap());
        store.delete_vm("a1").unwrap();
        assert!(store.leased_vms(None).unwrap().is_empty());
    }

    #[test]
    fn fresh_database_file_is_created_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
        drop(store);
        // Reopening an up-to-date database applies nothing and keeps data.
        let store = Store::open(&path).unwrap();
        store.insert_vm(&record("abcd1234", "dev")).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.list_vms().unwrap().len(), 1);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn names_are_unique_and_lookups_work() {
        let store = Store::in_memory().unwrap();
        store.insert_vm(&record("abcd1234", "dev")).unwrap();
        assert!(matches!(
            store.insert_vm(&record("ffff0000", "dev")),
            Err(StoreError::NameTaken(_))
        ));
        store.insert_vm(&record("abce5678", "other")).unwrap();
        assert_eq!(store.find_vm("dev").unwrap().unwrap().id, "abcd1234");
        assert_eq!(store.find_vm("abce").unwrap().unwrap().name, "other");
        // Ambiguous prefix, short prefix, unknown: nothing.
        assert!(store.find_vm("abc").unwrap().is_none());
        assert!(store.find_vm("abcd12345").unwrap().is_none());
        assert!(store.find_vm("nope").unwrap().is_none());
        match store.lookup_vm("abc").unwrap() {
            VmLookup::Missing => {}
            other => panic!("a 3-digit prefix matched: {other:?}"),
        }
        store.insert_vm(&record("abce9999", "third")).unwrap();
        match store.lookup_vm("abce").unwrap() {
            VmLookup::Ambiguous(c) => assert_eq!(
                c,
                [
                    ("other".to_string(), "abce5678".to_string()),
                    ("third".to_string(), "abce9999".to_string())
                ]
            ),
            other => panic!("not ambiguous: {other:?}"),
        }
    }

    #[test]
    fn the_sync_manifest_is_per_vm_and_goes_with_the_vm() {
        let store = Store::in_memory().unwrap();
        for (id, name) in [("aaaa1111", "one"), ("bbbb2222", "two")] {
            store.insert_vm(&record(id, name)).unwrap();
        }
        let file = |p: &str, oid: &str, stat: bool| SyncedFile {
            path: p.into(),
            kind: Kind::Executable,
            oid: oid.into(),
            stat: stat.then_some(HostStat {
                size: 3,
                mtime_ns: 1_700_000_000_123_456_789,
                ctime_ns: 5,
                ino: 9,
            }),
        };
        store
            .replace_manifest("aaaa1111", &[file("a", "1", true), file("b", "2", false)])
            .unwrap();
        store
            .replace_manifest("bbbb2222", &[file("a", "x", true)])
            .unwrap();
        store
            .update_manifest("aaaa1111", &[file("c", "3", true)], &["b".into()])
            .unwrap();
        assert_eq!(
            store.manifest("aaaa1111").unwrap(),
            [file("a", "1", true), file("c", "3", true)]
        );
        assert_eq!(
            store
                .manifest_entries("bbbb2222", &["a".into(), "zz".into()])
                .unwrap(),
            [file("a", "x", true)]
        );
        store
            .update_manifest("aaaa1111", &[file("d/e", "4", false)], &[])
            .unwrap();
        assert!(store.manifest_has_prefix("aaaa1111", "d/").unwrap());
        assert!(!store.manifest_has_prefix("aaaa1111", "e/").unwrap());
        store.delete_vm("aaaa1111").unwrap();
        assert!(store.manifest("aaaa1111").unwrap().is_empty());
    }

    #[test]
    fn a_lifecycle_write_does_not_undo_a_workspace() {
        let store = Store::in_memory().unwrap();
        let vm = record("abcd1234", "dev");
        store.insert_vm(&vm).unwrap();
        let ws = WorkspaceRecord {
            guest_path: "/root/repo".into(),
            head: Some("h".into()),
            source: "/src".into(),
            include_untracked: true,
        };
        store.set_workspace(&vm.id, Some(&ws)).unwrap();
        // An older copy (no workspace) written back by a stop.
        let mut stale = vm.clone();
        stale.state = VmState::Stopped;
        store.update_vm(&stale).unwrap();
        assert_eq!(store.find_vm("dev").unwrap().unwrap().workspace, Some(ws));
    }

    #[test]
    fn update_and_delete() {
        let store = Store::in_memory().unwrap();
        let mut vm = record("abcd1234", "dev");
        store.insert_vm(&vm).unwrap();
        vm.state = VmState::Running;
        vm.pid = Some(42);
        vm.pid_start_time = Some(7);
        store.update_vm(&vm).unwrap();
        let got = store.find_vm("dev").unwrap().unwrap();
        assert_eq!(got.state, VmState::Running);
        assert_eq!((got.pid, got.pid_start_time), (Some(42), Some(7)));
        store.delete_vm("abcd1234").unwrap();
        assert!(store.list_vms().unwrap().is_empty());
    }
}
