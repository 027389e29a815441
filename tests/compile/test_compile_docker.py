"""Docker's commands: Compose and container services, volumes (mountpoint, creation with Compose's labels,
numeric owners), and PostgreSQL inside a container. Every command is valid shell (`sh -n`) and every
user value is one quoted word."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Poll, Shell
from mdsl.compile.parts import CompileError
from mdsl.syntax.parser import parse_text

HEAD = """plan "docker"
host a { ssh = "root@10.0.0.1" }
host b { ssh = "root@10.0.0.2" }
host here { local = true }
service old_app on a {
  compose = "/srv/my app/docker-compose.yml"  services = ["server", "ml"]  writes = [old_cache, old_pg]
}
service old_all on a { compose = "/srv/my app/docker-compose.yml" }
service new_app on b { compose = "/srv/immich/docker-compose.yml"  writes = [new_cache, new_pg]  initially = stopped }
service vw on a { container = "vaultwarden" }
volume old_cache on a { docker = "immich_model-cache" }
volume new_cache on b { docker = "immich_model-cache"  fresh = true }
volume here_cache on here { docker = "immich_model-cache"  fresh = true }
dir old_dir on a { path = "/srv/data" }
postgres old_pg on a { container = "immich_postgres"  database = "immich"  user = "postgres" }
postgres new_pg on b {
  container = "immich_postgres"  database = "immich"  user = "postgres"  password = env("PW")  fresh = true
}
"""


def compiled(steps: str):
    bound = resolve(parse_text(HEAD + "steps {\n" + steps + "\n}\n", "docker.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def texts(steps: str, kind=None) -> list:
    cp = compiled(steps)
    return [a.command.render() for s in cp.leaves() for a in s.actions
            if isinstance(a, (Shell, Poll)) and (kind is None or isinstance(a, kind))]


def valid_shell(text: str) -> None:
    r = subprocess.run(["sh", "-n", "-c", text], capture_output=True, text=True)
    assert r.returncode == 0, (text, r.stderr)


def test_a_compose_service_stops_its_listed_services_and_waits_until_docker_says_they_stopped():
    act, poll = texts("  stop old_app")
    for t in (act, poll):
        valid_shell(t)
    assert act.startswith("cd -- '/srv/my app' && if docker compose version")
    assert "mdsl_compose -f '/srv/my app/docker-compose.yml' stop -- server ml" in act
    # the check asks Docker by Compose's labels, for the project name Compose itself uses
    assert "mdsl_p=$(mdsl_project '/srv/my app/docker-compose.yml' )" in poll
    assert "for mdsl_s in server ml ;" in poll and "running*|restarting*|paused*" in poll


def test_a_compose_service_starts_with_up_and_no_deps_and_waits_for_running_and_healthy():
    act, poll = texts("  start old_app")
    assert "up -d --no-deps -- server ml" in act
    assert '"running "|"running healthy"' in poll
    whole, _ = texts("  start old_all")
    assert whole.endswith("up -d")  # every service of the project, with their dependencies


def test_a_container_service_is_docker_stop_and_start():
    stop, stopped, start, running = texts("  stop vw\n  start vw")
    assert "docker stop -- vaultwarden" in stop and "docker start -- vaultwarden" in start
    assert stopped.startswith("for id in vaultwarden ;") and "running*" in stopped
    assert "-- vaultwarden ) || exit 2;" in running
    for t in (stop, stopped, start, running):
        valid_shell(t)


def test_a_volume_is_archived_at_its_mountpoint_with_numeric_owners():
    [archive] = texts('  archive old_cache to a:"/root/cache.tar.zst"')
    valid_shell(archive)
    assert "mdsl_dir=$(docker volume inspect --format '{{.Mountpoint}}' -- immich_model-cache )" in archive
    assert 'tar --no-unquote --numeric-owner -C "$mdsl_dir"' in archive
    assert "docker volume create" not in archive  # a source is never created


def test_a_volume_filled_by_extract_is_created_with_the_labels_of_the_compose_project_declaring_it():
    [extract] = texts('  extract b:"/root/cache.tar.zst" into new_cache')
    valid_shell(extract)
    assert "docker volume inspect -- immich_model-cache >/dev/null 2>&1 ||" in extract
    # the compose files of the plan's services on b, and only those
    assert "for f in /srv/immich/docker-compose.yml ;" in extract and "my app" not in extract
    assert 'if [ "${p}_$k" = immich_model-cache ]' in extract
    assert "--label com.docker.compose.project=$p --label com.docker.compose.volume=$k" in extract
    assert extract.index("docker volume create") < extract.index("tar --no-unquote --numeric-owner")


def test_a_volume_synced_between_hosts_is_reached_at_both_mountpoints_with_numeric_ids():
    [sync] = texts("  sync old_cache to new_cache")
    valid_shell(sync)
    words = shlex.split(sync)
    assert "--numeric-ids" in words
    # the source's mountpoint here, the target's through the far rsync, which starts in it (made first)
    assert '"$mdsl_src/"' in sync and words[-1] == "mdsl-route-target:./"  # the route names the target (issue 11)
    [rsync_path] = [w for w in words if w.startswith("--rsync-path=")]
    far = rsync_path[len("--rsync-path="):]
    valid_shell(far)
    script = shlex.split(far)[2]
    assert "docker volume create" in script and script.endswith('cd "$mdsl_dir" && exec rsync "$@"')


def test_a_live_sync_into_a_far_volume_marks_its_files_there():
    [live] = texts("  sync old_cache to new_cache live")
    valid_shell(live)
    assert "find \"$@\"" in live and "-P . ! -type d" in live


def test_a_volume_synced_into_a_local_one():
    [sync] = texts("  sync old_cache to here_cache")
    valid_shell(sync)
    assert '"$mdsl_dst/"' in sync and "root@10.0.0.1:./" in sync


ROOT_TEST = '[ -w "/proc/$mdsl_pid/root/tmp" ] ; then'


def branches(text: str):
    """(where the host reaches the container's file system, where it does not): the two branches of the
    `if` on `/proc/PID/root`."""
    head, _, rest = text.partition(ROOT_TEST)
    direct, _, streamed = rest.partition(" ; else ")
    assert direct and streamed, text
    return head, direct, streamed


def docker_calls(text: str) -> dict:
    return {verb: text.count(f"docker {verb} ") for verb in ("exec", "inspect")}


def test_a_database_in_a_container_is_dumped_through_fifos_in_its_file_system_where_the_host_reaches_it():
    cp = compiled('  dump old_pg to a:"/root/immich.dump"')
    [step] = list(cp.leaves())
    [dump] = [a.command.render() for a in step.actions]
    valid_shell(dump)
    head, direct, streamed = branches(dump)
    # one `docker inspect` (pid, user), then one exec: pg_dump into a fifo, pg_restore reading the other
    assert docker_calls(head) == {"exec": 0, "inspect": 1}
    assert docker_calls(direct) == {"exec": 1, "inspect": 0}
    assert "docker exec -i" not in direct  # no stream through the daemon
    assert 'mkfifo -m 600 -- "$mdsl_d" "$mdsl_d.v"' in direct and 'chown -- "$mdsl_own"' in direct
    assert ("docker exec immich_postgres sh -c 'pg_restore -f /dev/null < \"$1.v\" & v=$!; "
            "pg_dump -w -Fc -Z0 ") in direct
    assert '> "$1"; rc=$?; wait "$v"; vrc=$?;' in direct and '\' mdsl-dump "$mdsl_tmp"' in direct
    assert 'tee -- "$mdsl_d.v" < "$mdsl_d" | zstd -q -T0 -3 -c > /root/immich.dump.part &' in direct
    # the docker exec failing before its shell opened the fifos lets the host's ends go
    assert '[ "$mdsl_x" -eq 0 ] || mdsl_unblock "$mdsl_d";' in direct
    # its status tells pg_dump's failure from the read-back's
    assert 'case "$mdsl_x" in 0) rc=0 vrc=0;; 250) rc=0 vrc=1;; *) rc=$mdsl_x vrc=1;; esac;' in direct
    assert '[ "$vrc" -eq 0 ] && zstd -q -t < /root/immich.dump.part ||' in direct
    assert 'rm -f -- "$mdsl_d" "$mdsl_d.v";' in direct
    # a user given by name (looked up in the container's passwd) takes the streamed way
    assert 'case "$mdsl_own" in *[!0-9:]*) false;; esac' in head
    assert dump.index("zstd -q -t") < dump.index("mv -f -T")
    tools = dict(step.tools)["a"]
    assert "docker" in tools and "pg_dump" not in tools  # no PostgreSQL client needed on the host


def test_a_database_in_a_container_is_dumped_and_read_back_through_docker_exec_elsewhere():
    [dump] = texts('  dump old_pg to a:"/root/immich.dump"')
    _, _, streamed = branches(dump)
    assert "docker exec immich_postgres pg_dump -w -Fc -Z0 '--dbname=user=postgres dbname=immich' ;" in streamed
    # read back as it is written (no second pass through `docker exec -i`), then the part read whole
    assert "{ docker exec -i immich_postgres pg_restore -f /dev/null < /root/immich.dump.part.verify &" in streamed
    assert "| tee -- /root/immich.dump.part.verify | zstd -q -T0 -3 -c > /root/immich.dump.part ;" in streamed
    assert 'wait "$mdsl_vpid"; vrc=$?' in streamed
    assert '[ "$vrc" -eq 0 ] && zstd -q -t < /root/immich.dump.part ||' in streamed


def test_a_directory_dump_of_a_container_database_is_refused():
    with pytest.raises(CompileError, match="inside container `immich_postgres`"):
        compiled('  dump old_pg to a:"/root/immich.d" format = directory')


def test_a_parallel_restore_into_a_container_reads_a_copy_made_inside_it_and_removes_it():
    [restore] = texts('  restore b:"/root/immich.dump" into new_pg')
    valid_shell(restore.replace("<0600 temp file: PGPASSWORD=***>", "/tmp/x"))
    zstd_branch = restore.split("; else mdsl_tmp=")[1]  # the dump's format read from the file: zstd
    head, direct, streamed = branches(zstd_branch)
    # the host writes the copy straight into the container's file system where it can (a 0600 file of
    # the user docker exec runs as; zstd's own status tells a cut dump), else streams it in
    assert docker_calls(head) == {"exec": 0, "inspect": 1}
    assert ('umask 077 && rm -f -- "$mdsl_d" "$mdsl_d.go" && : > "$mdsl_d" && mkfifo -m 600 -- "$mdsl_d.go" && '
            '{ [ -z "$mdsl_own" ] || chown -- "$mdsl_own" "$mdsl_d" "$mdsl_d.go"; }') in direct
    assert 'zstd -q -dc < /root/immich.dump > "$mdsl_d"' in direct and "zstd -q -t" not in direct
    assert "docker exec immich_postgres sh -c 'umask 077 && : > \"$1\"' mdsl-restore \"$mdsl_tmp\"" in streamed
    assert "zstd -q -t < /root/immich.dump &&" in streamed
    assert "| docker exec -i immich_postgres sh -c 'cat > \"$1\"' mdsl-restore \"$mdsl_tmp\"" in streamed
    # then one exec: one shell inside makes the database when missing, restores with the host's job count,
    # removes the copy
    # (elsewhere: make the copy, stream it in, restore; and a removal only when something failed)
    assert docker_calls(streamed) == {"exec": 4, "inspect": 0}
    assert docker_calls(direct) == {"exec": 1, "inspect": 0}
    assert '-j "$2"' in restore and 'mdsl-restore "$mdsl_tmp" "$mdsl_jobs"' in restore
    assert "|| createdb -w -T template0" in restore and 'rm -f -- "$1"; exit "$rc"' in restore
    assert ('if [ -n "$mdsl_d" ]; then rm -f -- "$mdsl_d" "$mdsl_d.go"; else docker exec immich_postgres sh -c '
            '\'rm -f -- "$1"\'') in restore
    # where the host writes the copy, the exec starts at once and waits for the host's word on a fifo: the
    # database is made and restored only once the copy is whole
    assert 'mkfifo -m 600 -- "$mdsl_d.go"' in direct and '"$mdsl_d.go"; } && {' in direct
    assert "sh -c 'read mdsl_go < \"$1.go\" && [ \"$mdsl_go\" = go ] && { psql" in direct
    assert direct.index("& mdsl_epid=$!;") < direct.index('zstd -q -dc < /root/immich.dump > "$mdsl_d"')
    assert '[ "$mdsl_f" -eq 0 ] && mdsl_say=go || mdsl_say=stop;' in direct
    assert 'dd of="$mdsl_d.go" oflag=nonblock' in direct and 'wait "$mdsl_epid"; mdsl_e=$?;' in direct


def test_a_container_databases_password_travels_in_an_env_file_never_in_argv():
    cp = compiled('  restore b:"/root/immich.dump" into new_pg jobs = 1')
    [step] = list(cp.leaves())
    [cmd] = [a.command for a in step.actions]
    shown = cmd.render()
    assert "MDSL_PGENV=<0600 temp file: PGPASSWORD=***>" in shown
    assert "--env-file \"$MDSL_PGENV\"" in shown
    secret_files = [f for f in cmd.all_secret_files()]
    assert secret_files and all(f.var == "MDSL_PGENV" for f in secret_files)
    assert secret_files[0].content.reveal(lambda s: "hunter2") == b"PGPASSWORD=hunter2\n"


def test_hostile_names_stay_single_words():
    text = HEAD.replace("/srv/my app/", "/srv/a'b;$(x)/") + "steps {\n  stop old_app\n}\n"
    bound = resolve(parse_text(text, "x.plan"))
    cp = compile_plan(bound)
    [act, _] = [a.command.render() for s in cp.leaves() for a in s.actions]
    assert "'/srv/a'\"'\"'b;$(x)/docker-compose.yml'" in act
    valid_shell(act)


MYSQL = HEAD + """mysql old_my on a { container = "nextcloud-db"  database = "nextcloud"  user = "root"  password = env("PW") }
mysql new_my on b { container = "nextcloud-db"  database = "nextcloud"  user = "root"  password = env("PW")  fresh = true }
"""


def mysql_texts(steps: str) -> list:
    bound = resolve(parse_text(MYSQL + "steps {\n" + steps + "\n}\n", "docker.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    cp = compile_plan(bound)
    return [(a.command, step) for step in cp.leaves() for a in step.actions if isinstance(a, Shell)]


def test_a_mysql_database_in_a_container_is_dumped_by_its_own_client_through_docker_exec():
    [(cmd, step)] = mysql_texts('  dump old_my to a:"/root/nc.sql.zst"')
    text = cmd.render()
    valid_shell(text.replace("<0600 temp file: MYSQL_PWD=***>", "/tmp/x"))
    # the wrapper (mariadb-dump, else mysqldump) runs inside the container; zstd and the file stay on the host
    assert "sh -c 'exec docker exec --env-file \"$MDSL_MYSQL_ENV\" \"$@\"' mdsl-exec nextcloud-db sh -c " in text
    assert "command -v mariadb-dump || command -v mysqldump" in text and "| zstd -q -T0 -1 -c >" in text
    assert "MDSL_MYSQL_ENV=<0600 temp file: MYSQL_PWD=***>" in text and "--defaults-extra-file=/" not in text
    tools = dict(step.tools)["a"]
    assert "docker" in tools and "mariadb-dump|mysqldump" not in tools  # no client needed on the host


def test_a_mysql_restore_into_a_container_feeds_the_client_inside_on_stdin():
    [(cmd, _)] = mysql_texts('  restore b:"/root/nc.sql.zst" into new_my')
    text = cmd.render()
    valid_shell(text.replace("<0600 temp file: MYSQL_PWD=***>", "/tmp/x"))
    assert "| python3 -c" in text
    assert "sh -c 'exec docker exec -i --env-file \"$MDSL_MYSQL_ENV\" \"$@\"' mdsl-exec nextcloud-db sh -c " in text
    secret = [f for f in cmd.all_secret_files()]
    assert secret and secret[0].content.reveal(lambda s: "pw") == b"MYSQL_PWD=pw\n"


def test_a_mysql_database_in_a_container_has_no_run_as():
    text = MYSQL.replace('container = "nextcloud-db"  database = "nextcloud"  user = "root"  password = env("PW") }',
                         'container = "nextcloud-db"  database = "nextcloud"  run_as = "mysql" }', 1)
    bound = resolve(parse_text(text + "steps {\n}\n", "docker.plan"))
    assert any("`run_as`" in f.message for f in bound.findings)
