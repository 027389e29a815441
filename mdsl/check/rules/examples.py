"""The declarations most catalogue examples share: an app with a database, a
files dir and a service on an old host, and empty twins on a new host.

Every page shows its whole plan, built from these parts, so a reader can paste
it into a file and run `mdsl check` on it.
"""

from __future__ import annotations

HOSTS = '''host old { ssh = "root@old.example.net" }
host new { ssh = "root@new.example.net" }
'''

DBS = '''postgres old_db on old { database = "app"  password = env("APP_DB_PASSWORD") }
postgres new_db on new { database = "app"  run_as = "app"  fresh = true }
'''

FILES = '''dir old_files on old { path = "/srv/app/files"  owner = "app:app" }
dir new_files on new { path = "/srv/app/files"  owner = "app:app" }
'''

SERVICES = '''service old_app on old { systemd = ["app"]  writes = [old_db, old_files] }
service new_app on new { systemd = ["app"]  writes = [new_db, new_files]  initially = stopped }
'''

# The usual move, one copy of each kind, in a safe order.
MOVE = '''  stop old_app
  dump old_db to old:"/root/app.dump"
  archive old_files to old:"/root/files.tar.gz"
  transfer old:"/root/app.dump" to new:"/root/app.dump"
  transfer old:"/root/files.tar.gz" to new:"/root/files.tar.gz"
  restore new:"/root/app.dump" into new_db replace
  extract new:"/root/files.tar.gz" into new_files
  start new_app
'''


def plan(steps: str, decls: str = "") -> str:
    """A whole example plan: the shared declarations (or `decls`) and `steps`."""
    decls = decls or HOSTS + "\n" + DBS + "\n" + FILES + "\n" + SERVICES
    return f'plan "example"\n\n{decls}\nsteps {{\n{steps}}}\n'
