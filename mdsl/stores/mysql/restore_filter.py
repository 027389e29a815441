"""The MySQL/MariaDB restore filter: a python3 program between the decompressed dump and N clients.

It runs on the restore host (`python3 -c RESTORE_SCRIPT SPOOL N CHUNK`), started by the restore step's
shell (commands.restore), which makes the N clients' FIFOs `SPOOL/in0..inN-1`, sends each client's
output to `SPOOL/outI` and its exit status to `SPOOL/rcI`, and loads `SPOOL/tail.sql` after the filter
and every client are done. Measurements behind the choices: docs/performance.md (MariaDB block).

- DEFINER clauses go, so views, triggers, routines and events are defined by the restoring user and
  work on a server where the source's definer does not exist. Only at the line starts mysqldump writes
  for them; a data line starts with `(` or `INSERT`, so a value holding `DEFINER=` is never touched.
- An InnoDB table's secondary keys are taken out of its CREATE TABLE and added by one ALTER TABLE after
  its rows (a sorted build instead of random inserts: 3x faster on Nextcloud's oc_filecache), unless
  the table has foreign keys (they need their index while rows arrive), a FULLTEXT or SPATIAL key (one
  per ALTER in InnoDB) or an AUTO_INCREMENT column outside the primary key (it must be a key).
- Each table's part (structure, rows, keys, triggers) goes to the next client free, after the dump's
  header (its session settings: character set, time zone, checks off); it is written to a file in the
  spool directory as it is read and sent from there, so a big table does not hold up the next ones.
- An InnoDB table whose rows pass CHUNK bytes of SQL is split at INSERT statements (whole statements,
  in the dump's primary key order, as mydumper's `-r` splits by row ranges): its first part holds the
  structure and the first rows, each further part only rows, and a last part what follows the rows
  (the keys' ALTER TABLE, the triggers). The parts go to the clients free like any other, with an
  order between them that the filter keeps by what the clients print: a `SELECT 'mdsl: N created'`
  after the CREATE TABLE and a `SELECT 'mdsl: N loaded'` after each part's rows (the clients run with
  --unbuffered, so each line is in `SPOOL/outI` once the statements before it are done). A row part
  waits for its table's CREATE; the last part waits for every row part, so the keys are built once,
  after the last rows, and a trigger is made after every row is in and fires for none of them (as
  when one client loads the table). Such a table's LOCK TABLES/UNLOCK TABLES lines are left out:
  several sessions write it at once (nothing else writes the new database during a restore).
- What is not a table (views, routines, events, the closing settings) goes to `tail.sql`, loaded
  after every table by the step's shell: a view needs its tables.
- A client that fails stops the filter: its error (the last line it printed) is the filter's first line
  on stderr, and no more parts are sent. The dump must end with the client's closing line; only then
  `tail.sql` is written, ending in a sentinel SELECT, so a cut stream (the decompressor failed halfway)
  never looks like a finished restore.
- On stdout, one line naming the tables loaded by several clients at once (the step shows it).
"""

from __future__ import annotations

# Rows of one table per part before the filter starts another part of it (SQL bytes, whole statements):
# mariadb-dump's INSERT statements are up to 1 MB (net_buffer_length), so a part is 16 or more of them.
CHUNK_BYTES = 16 << 20

RESTORE_SCRIPT = r'''
import os, re, sys, threading
spool, jobs = sys.argv[1], int(sys.argv[2])
chunk = int(sys.argv[3]) if len(sys.argv) > 3 else 16 << 20
inp = sys.stdin.buffer
definer = re.compile(rb"^(/\*!50003 CREATE\*/ /\*!50017 |/\*!50013 |CREATE |/\*!50106 CREATE\*/ /\*!50117 )"
                     rb"DEFINER=`(?:[^`]|``)*`@`(?:[^`]|``)*`")
create = re.compile(rb"^CREATE TABLE (`(?:[^`]|``)+`) \(\n$")
key = re.compile(rb"^  (?:UNIQUE )?KEY `")
TABLE = b"-- Table structure for table "
OTHER = (b"-- Temporary table structure for view ", b"-- Dumping events", b"-- Dumping routines",
         b"-- Final view structure")
cond = threading.Condition()
parts, errors, state = [], [], {"read": False}
printed, closed = set(), [False] * jobs  # the markers the clients printed; the FIFOs the filter closed

def said(i):
    """The last line client i printed that is not a marker (its error, when it failed)."""
    try:
        with open(os.path.join(spool, "out%d" % i), "rb") as f:
            lines = [x for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return ""
    lines = [x for x in lines if not x.startswith("mdsl: ")]
    return lines[-1] if lines else ""

def fail(i, why):
    """(with cond held) the first failure is the one reported."""
    if not errors:
        errors.append("restore client %d failed: %s" % (i + 1, said(i) or why))
    cond.notify_all()

def scan():
    """(with cond held) the markers the clients printed; a client that exited before its end is a failure."""
    for i in range(jobs):
        try:
            with open(os.path.join(spool, "out%d" % i), "rb") as f:
                printed.update(x for x in f.read().splitlines() if x.startswith(b"mdsl: "))
            with open(os.path.join(spool, "rc%d" % i), "rb") as f:
                rc = f.read().strip()
        except OSError:
            continue
        if rc and (rc != b"0" or not closed[i]):
            fail(i, "it stopped early (exit %s)" % rc.decode())

class Part:
    def __init__(self, n, after=()):
        self.n, self.after, self.client = n, tuple(after), None
        self.path = os.path.join(spool, "part%05d.sql" % n)
        self.out, self.size, self.sent, self.done = open(self.path, "wb"), 0, 0, False
    def marker(self, what):
        return b"mdsl: %d %s" % (self.n, what)
    def write(self, data):
        self.out.write(data)
        self.sent += len(data)
        if self.sent - self.size >= 1 << 20:
            self.publish()
    def publish(self, done=False):
        self.out.flush()
        if done:  # its file is unlinked once sent: its space comes back only when closed here too
            self.out.close()
        with cond:
            self.size, self.done = self.sent, done
            cond.notify_all()

def ready():
    """(with cond held) the first part queued whose prerequisites the clients have printed, or None."""
    for p in parts:
        if all(m in printed for m in p.after):
            return p
    return None

def client(i, header):
    try:
        with open(os.path.join(spool, "in%d" % i), "wb") as fifo:
            try:
                fifo.write(header)
                while True:
                    with cond:
                        while True:
                            if errors:
                                return
                            part = ready()
                            if part is None and parts:
                                scan()
                                part = None if errors else ready()
                            if part is not None:
                                parts.remove(part)
                                part.client = i
                                break
                            if not parts and state["read"]:
                                return
                            cond.wait(0.05 if parts else None)
                    with open(part.path, "rb") as f:
                        while True:
                            data = f.read(1 << 20)
                            if data:
                                fifo.write(data)
                                continue
                            with cond:
                                if errors:
                                    return
                                if part.done and f.tell() >= part.size:
                                    break
                                cond.wait(1)
                    os.unlink(part.path)
            finally:
                with cond:
                    closed[i] = True
    except OSError as e:
        with cond:
            fail(i, "it stopped early (%s)" % (e.strerror or e))

header, pending, last, out, workers, count = [], {}, b"", None, [], 0
tail = open(os.path.join(spool, "tail.part"), "wb")
# the table being read: {name, innodb, rows: its parts holding rows, ended: its rows are all read, bytes: of
# rows in its last part, created: the marker its CREATE is done}; the tables split, with their row parts
table, split = None, []
def flush_keys():
    for name, keys in list(pending.items()):
        (out or tail).write(b"ALTER TABLE " + name + b" " + b", ".join(b"ADD " + k for k in keys) + b";\n")
        del pending[name]
def start(to):
    """Lines go to `to` from now on; the part before is complete; a new part is queued for the clients."""
    global out, workers
    if isinstance(out, Part):
        out.publish(done=True)
    if out is None and not workers:
        workers = [threading.Thread(target=client, args=(i, b"".join(header)), daemon=True) for i in range(jobs)]
        tail.write(b"".join(header))
        for w in workers:
            w.start()
    out = to
    if isinstance(to, Part):
        with cond:
            parts.append(to)
            cond.notify_all()
def switch(to):
    flush_keys()
    start(to)
def new_part(after=()):
    global count
    count += 1
    return Part(count, after)
def end_rows():
    """After a split table's rows: what follows them goes to a last part, once every row part is loaded."""
    rows, table["ended"] = table["rows"], True
    if len(rows) > 1:
        out.write(b"SELECT '" + out.marker(b"loaded") + b"';\n")
        split.append((table["name"], rows))
        start(new_part(after=[p.marker(b"loaded") for p in rows]))
def emit(data):
    if out is None:
        header.append(data)
    else:
        out.write(data)
for line in inp:
    if errors:
        break
    last = line if line.strip() else last
    if line.startswith((b"(", b"INSERT ")):
        # its rows: from its first INSERT (not a `(PARTITION` line of its CREATE) to the first other line
        # (not a trigger's body after them)
        if table is not None and table["innodb"] and not table["ended"] and (
                table["rows"] is not None or line.startswith(b"INSERT INTO " + table["name"] + b" ")):
            rows = table["rows"]
            if rows is None:  # its first row: the other parts of its rows may start once it exists
                out.write(b"SELECT '" + out.marker(b"created") + b"';\n")
                rows = table["rows"] = [out]
                table["created"], table["bytes"] = out.marker(b"created"), 0
            elif line.startswith(b"INSERT INTO " + table["name"] + b" ") and table["bytes"] >= chunk:
                out.write(b"SELECT '" + out.marker(b"loaded") + b"';\n")
                start(new_part(after=[table["created"]]))
                rows.append(out)
                table["bytes"] = 0
            table["bytes"] += len(line)
        emit(line)
        continue
    if table is not None and table["rows"] and not table["ended"]:
        end_rows()
    if line.startswith(TABLE):
        table = {"name": line[len(TABLE):].strip(), "innodb": False, "rows": None, "ended": False}
        switch(new_part())
    elif line.startswith(OTHER):
        table = None
        switch(tail)
    if table is not None and table["innodb"] and line.startswith((b"LOCK TABLES ", b"UNLOCK TABLES;")):
        continue  # several sessions may write this table at once
    m = create.match(line)
    if m:
        block = [line]
        for inner in inp:
            block.append(inner)
            if inner.startswith(b")"):
                break
        body, end = block[1:-1], block[-1]
        auto = [b.split(b"`")[1] for b in body if b.startswith(b"  `") and b" AUTO_INCREMENT" in b]
        pk = b"".join(b for b in body if b.startswith(b"  PRIMARY KEY"))
        innodb = b"ENGINE=InnoDB" in end
        movable = (innodb and not any(b.startswith(b"  CONSTRAINT") for b in body)
                   and not any(b.startswith((b"  FULLTEXT", b"  SPATIAL")) for b in body)
                   and all(b"`" + a + b"`" in pk for a in auto))
        keys = [b for b in body if key.match(b)] if movable else []
        kept = [b for b in body if b not in keys]
        if keys:
            kept[-1] = kept[-1].rstrip(b",\n") + b"\n"
            pending[m.group(1)] = [k.strip().rstrip(b",") for k in keys]
        if table is not None and out is not tail:
            table["innodb"] = innodb
        emit(block[0] + b"".join(kept) + end)
        continue
    if line.startswith(b"/*!40000 ALTER TABLE ") and line.rstrip().endswith(b"ENABLE KEYS */;"):
        emit(line)
        flush_keys()
        continue
    emit(definer.sub(lambda m: m.group(1), line, count=1))
if table is not None and table["rows"] and not table["ended"] and not errors:
    end_rows()
switch(tail)
with cond:
    state["read"] = True
    cond.notify_all()
for w in workers:
    w.join()
if errors:
    sys.exit("mdsl: " + errors[0])
if not last.startswith(b"-- Dump completed"):
    sys.exit("mdsl: the dump ends before the dump client's closing line")
tail.write(b"SELECT 'mdsl: restore complete';\n")
tail.close()
os.rename(os.path.join(spool, "tail.part"), os.path.join(spool, "tail.sql"))
if split:
    print("rows loaded by several clients at once: " + ", ".join(
        "%s (%d parts, %d clients)" % (name.decode("utf-8", "replace"), len(rows),
                                       len({p.client for p in rows}))
        for name, rows in split))
'''
