"""The floor of storing audit records one row each on SQLite: inserts 100,000 rows shaped like
`audit_events` (same columns and indexes, 200 patients, ids in time order) in transactions of
B rows (env B, default 500) with Python's sqlite3 module, and prints microseconds per row.

    python3 docs/audit-insert-floor.py MODE
MODE words: `shm` (database in /dev/shm: no disk), `noidx` (no secondary index), `onlyN` (only
the N-th secondary index: 0 patient, 1 org, 2 actor, 3 chain, 4 org+action), `norowid`.
"""
import datetime, os, random, sqlite3, sys, time, uuid

mode = sys.argv[1] if len(sys.argv) > 1 else "base"
path = "/dev/shm/audit-floor.db" if "shm" in mode else "/tmp/audit-floor.db"
for suffix in ["", "-wal", "-shm"]:
    try:
        os.remove(path + suffix)
    except FileNotFoundError:
        pass
c = sqlite3.connect(path, isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("pragma synchronous=normal")
c.execute(
    "CREATE TABLE audit_events (id varchar(36) NOT NULL PRIMARY KEY, at text NOT NULL,"
    " chain varchar(36) NOT NULL, org_id varchar(36), actor_kind varchar(16) NOT NULL,"
    " actor_id varchar(64), action varchar(24) NOT NULL, entity_type varchar(32) NOT NULL,"
    " entity_id varchar(128), patient_id varchar(36), outcome varchar(8) NOT NULL,"
    " request_id varchar(64), client_address varchar(64), operation_name varchar(128),"
    " chain_index integer, prev_hash varchar(64), hash varchar(64))"
    + (" WITHOUT ROWID" if "norowid" in mode else "")
)
indexes = [
    "CREATE INDEX i0 ON audit_events (patient_id, at, id)",
    "CREATE INDEX i1 ON audit_events (org_id, at, id)",
    "CREATE INDEX i2 ON audit_events (actor_id, at, id)",
    "CREATE UNIQUE INDEX i3 ON audit_events (chain, chain_index)",
    "CREATE INDEX i4 ON audit_events (org_id, action, at, id)",
]
if "noidx" in mode:
    indexes = []
for n in range(5):
    if f"only{n}" in mode:
        indexes = [indexes[n]]
for statement in indexes:
    c.execute(statement)

org = str(uuid.uuid4())
actors = [str(uuid.uuid4()) for _ in range(10)]
patients = [str(uuid.uuid4()) for _ in range(200)]
N, B = 100_000, int(os.environ.get("B", "500"))
base = time.time()
rows = []
for i in range(N):
    at = datetime.datetime.fromtimestamp(base + i * 0.0001, datetime.timezone.utc)
    rows.append((
        "%012d-0000-7000-8000-000000000000" % i, at.isoformat(timespec="microseconds"), org,
        org, "USER", random.choice(actors), "READ", "APPOINTMENT", str(uuid.uuid4()),
        random.choice(patients), "ALLOWED", str(uuid.uuid4()), "127.0.0.1", "Dashboard",
        i + 1, "a" * 64, "b" * 64,
    ))
start = time.time()
for k in range(0, N, B):
    c.execute("begin")
    c.executemany("insert into audit_events values (" + ", ".join("?" * 17) + ")", rows[k:k + B])
    c.execute("commit")
took = time.time() - start
print(f"{mode}: {N / took:.0f} rows/s, {took / N * 1e6:.1f} us/row, B={B}")
