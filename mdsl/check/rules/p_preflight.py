"""P: preflight at apply time, before the first step changes anything. The
checks run in `mdsl/run/` (they need the hosts) and make their findings through
the rules here (`P402.finding(message, span, ...)`). Their examples describe
situations rather than plans."""

from __future__ import annotations

from mdsl.check.rules.base import ERROR, WARNING, Rule

P401 = Rule(
    "P401", "a host is unreachable, refuses the key, or has an unknown host key", ERROR,
    summary=(
        "Every host of the plan is contacted before anything happens: it must answer, accept the "
        "SSH key, and present a host key that known_hosts (or the host's `known_hosts` file) "
        "vouches for. Unknown keys are refused unless `--accept-new-host-keys`: trusting a key on "
        "first use during a migration is how a man in the middle gets the database."),
    bad="A plan whose new host was reinstalled: its host key changed, and apply stops before `stop old_app`.",
    fixed="Confirm the new key out of band, update known_hosts (or run once with `--accept-new-host-keys`).",
    source="the seed reached beetroot over SSH as root and over tailscale; both must work before the downtime.",
)

P402 = Rule(
    "P402", "a tool a step needs is missing on its host", ERROR,
    summary=(
        "pg_dump, pg_restore, tar, zstd, rsync, sha256sum, systemctl: each step needs some tool on "
        "its host, and a missing one found halfway through leaves the service down."),
    bad="`archive ... compress = zstd` on a host without zstd installed.",
    fixed="Install zstd on that host, or use `compress = gzip`.",
    source="the seed installed what it needed as it went; a tool found missing after `stop` lengthens the downtime.",
)

P403 = Rule(
    "P403", "pg_restore or the target server is older than the dump", ERROR,
    summary=(
        "A dump written by pg_dump 16 cannot be read by pg_restore 15, and restoring into an older "
        "server than the source may fail on new syntax. The target's pg_restore must be at least "
        "as new as the source's pg_dump, and the target server not older than the source server."),
    bad="Ubuntu runs PostgreSQL 16 with pg_dump 16; the NixOS target still has PostgreSQL 15.",
    fixed="Upgrade the target first, or dump with the target's pg_dump version over the network.",
    source="the seed moved from Ubuntu's PostgreSQL to the NixOS module's; their versions need not match.",
)

P404 = Rule(
    "P404", "not enough free disk for a dump, archive or transfer", ERROR,
    summary=(
        "Every location that receives a dump, an archive or a transferred copy needs room for it: "
        "the estimate is pg_database_size or du of the source, with a margin. What lands on one file "
        "system adds up. A parallel restore of a zstd dump also decompresses it beside itself "
        "(`LOC.restore.part`, removed when the restore ends): that copy counts while the restore runs, "
        "at the database's size for a dump the plan makes, 5x the file for one found on the host. "
        "The room needed is the peak: all that stays, or what stays up to the restore plus its copy."),
    bad="Archiving a 40 GB public/system into /root on a 20 GB root filesystem.",
    fixed="Archive to a larger filesystem, or `sync` the dir host to host without an archive.",
    source="the seed: the cache folder alone was 'multiple GBs'.",
)

P405 = Rule(
    "P405", "a systemd unit, service command, container or Compose project does not exist", ERROR,
    summary=(
        "Every unit named in a service's `systemd = [...]` must exist on its host (and every start/"
        "stop/status command must be runnable), or stopping and starting services fails midway. "
        "Likewise every `container` a service names, and every Compose project (`compose`) with the "
        "`services` listed from it; a project the plan finds running must have containers under the "
        "name Compose gives it from that file (else the app runs from another deployment, and stopping "
        "this one would stop nothing while it writes on). An image a project the plan starts needs "
        "that is not on the host is a warning: `docker compose up` would pull it during the downtime, "
        "or fail where no registry answers."),
    bad="`systemd = [\"mastodon-sidekiq\"]` on a NixOS host whose module names it differently.",
    fixed="List the units `systemctl list-units 'mastodon*'` shows on that host.",
    source="unit names differ between a hand-built install and a distribution's module, and the seed moved "
           "from one to the other.",
)

P406 = Rule(
    "P406", "a database does not accept the declared authentication", ERROR,
    summary=(
        "Each database is connected to the way the plan says: a password over TCP, or peer "
        "authentication as `run_as` over the unix socket. A mismatch is found before the old "
        "service is stopped, not after."),
    bad="The target uses peer auth over the socket (the NixOS module), but the plan gives `tcp` and a password.",
    fixed="Declare `run_as = \"mastodon\"` and no `tcp` for the target database.",
    source="the seed: 'Ubuntu was set up to run over 127.0.0.1, the NixOS Mastodon Module by default provisions "
           "Postgres with auth trust ... and with a socket entrypoint'.",
)

P407 = Rule(
    "P407", "a destination directory is not writable", ERROR,
    summary=(
        "Every directory a step writes into must be writable by the user that writes there (the SSH "
        "user, or the user sudo switches to)."),
    bad="Transferring into /var/lib/mastodon as a non-root SSH user without `sudo = true`.",
    fixed="Declare `sudo = true` on the host, or transfer into a directory that user owns.",
    source="the seed: 'remember to check file permissions when you do this'.",
)

P408 = Rule(
    "P408", "data the plan reads is missing, unreadable or empty", ERROR,
    summary=(
        "Every dir, file and artifact a step reads that existed before the plan ran (a source of "
        "`archive`, `sync`, `transfer` or `move`) is looked at before the first step: it exists, is "
        "of the declared kind and the login user can read it. A typo in a path, or a disk that was "
        "not mounted, is found before `stop old_app`, not after it with the site down. An empty "
        "source dir is a warning: an unmounted disk looks exactly like that. Databases are proven "
        "the same way by P406."),
    bad='`dir old_media on old { path = "/srv/mastodon/public/sytem" }` (a typo) read by `sync` after `stop`.',
    fixed="Fix the path; preflight then finds the dir and its data.",
    source="issue #16: a missing source passed preflight and the site stayed down after the stop.",
    also=(WARNING,),
)

P409 = Rule(
    "P409", "Docker does not answer on a host that needs it", ERROR,
    summary=(
        "A host with a Compose or container service, a `volume`, or a database inside a `container` "
        "needs its Docker daemon to answer the login user: through the `docker` group, or as root "
        "(`sudo = true` on the host). A volume's files are read and written at its mountpoint under "
        "Docker's data root, which only root can enter."),
    bad="The new host's login user is not in the `docker` group, and the host has no `sudo = true`.",
    fixed="Add the user to the `docker` group (and log in again), or declare `sudo = true` on the host.",
    source="Docker's socket is root's (or the docker group's); most Compose installs are run with sudo.",
)

P410 = Rule(
    "P410", "a Compose project will not use the volumes the plan fills", ERROR,
    summary=(
        "Compose prefixes every volume with the project's name: COMPOSE_PROJECT_NAME (in the "
        "environment or the project's `.env`), the file's top-level `name:` (v2), else the "
        "directory's name, lowercased. The same compose file deployed from `/srv/immich2` instead of "
        "`/srv/immich` uses `immich2_model-cache`, so after the plan filled `immich_model-cache` the "
        "app starts on new, empty volumes (and may initialise them). Preflight asks Compose on the "
        "target which names the project will use and compares them with the volumes the plan fills "
        "there, before anything is stopped. `mdsl check` warns of what it can tell from the plan "
        "alone (H308)."),
    bad="The plan fills `immich_model-cache` on new, where the project lives in /srv/immich2/docker-compose.yml.",
    fixed="Deploy it in /srv/immich (or set `name: immich`, or COMPOSE_PROJECT_NAME=immich in its `.env`).",
    source="Compose's documentation on project names; a classic way to lose a Compose app's data in a move.",
)

P411 = Rule(
    "P411", "the app's own database login will not work on the target", ERROR,
    summary=(
        "A dump carries tables, not the server's users: the app's configuration moves unchanged, so after the "
        "cutover it logs in as the same user with the same password, and that login must exist on the new "
        "server, match the way the app connects, and have its rights. Every declared `login` is proven before "
        "the stop: one the plan makes (`like = OTHER`) needs an administrative login that may create it, and "
        "nothing on the server that would match the app's connection first; any other logs in as declared "
        "and must have rights on its database. MariaDB/MySQL match an account by user and host: "
        "`'wp'@'localhost'` takes socket logins, and TCP logins from 127.0.0.1 only while the server resolves "
        "names; with skip_name_resolve a TCP login is matched by its address and refused. PostgreSQL's "
        "pg_hba.conf is read the same way: the first line the app's connection meets must accept it (a "
        "`peer` line does not take a password, a `reject` line takes nothing)."),
    bad="WordPress connects over TCP to 127.0.0.1 (DB_HOST in wp-config.php); the new server has "
        "'wordpress'@'localhost' only and runs with skip_name_resolve: the site answers 'Error establishing a "
        "database connection' right after the cutover.",
    fixed="Create 'wordpress'@'127.0.0.1' with the same grants, let the plan make it (`like = wp_old` on the "
          "target's login), or point DB_HOST at the socket and declare `socket` on the login.",
    source="issue 19: a WordPress 6.1 move on MariaDB, restored as root over unix_socket, whose `wordpress` "
           "user existed on the old box only.",
)

P412 = Rule(
    "P412", "a copy between two hosts has no working route", ERROR,
    summary=(
        "`sync` and `transfer ... via = rsync|scp` between two SSH hosts run on the source and log in to the "
        "target from there, with a key pair mdsl makes for the copy (its public half in the target's "
        "~/.ssh/authorized_keys, `restrict`ed) and the target's host key as this machine knows it. Preflight "
        "opens every such route and logs in through it before any step: `route = direct` needs the source to "
        "reach the target's address and port, `route = relay` needs this machine to reach the target and "
        "the source's sshd to allow TCP forwarding, `auto` (the default) takes direct, else relay. A route "
        "that fails is reported here, before any app is stopped."),
    bad="The source is at one provider, the target behind NAT at home; `route = direct` cannot connect.",
    fixed="Leave `route` out (auto: relayed through this machine when the source cannot reach the target), "
          "or open the target's firewall to the source.",
    source="issue 11: a Gitea move stopped, dumped and transferred, then failed at the `sync` because the source "
           "host had no key for the target.",
)

P413 = Rule(
    "P413", "the source cannot be replicated as the plan asks", ERROR,
    summary=(
        "`replicate DB to DB live` needs, before anything changes: on the source's server `wal_level = "
        "logical` (changing it needs a server restart, so do it in a maintenance window before the move), a "
        "free replication slot (`max_replication_slots`) and WAL sender (`max_wal_senders`), a login with the "
        "REPLICATION attribute (or a superuser) that the source's server accepts over TCP from 127.0.0.1, "
        "where mdsl's SSH tunnel arrives; on the target's, free logical replication workers "
        "(`max_logical_replication_workers`, `max_worker_processes`). Every table needs a primary key or a "
        "replica identity, or its UPDATE and DELETE fail on the source once it is published: mdsl refuses, "
        "unless the step says `replica_identity = full` (whole rows identify them; slower on large tables). "
        "Large objects (pg_largeobject) are not replicated: mdsl refuses a source that has any. MariaDB "
        "(`mysql` stores): both servers MariaDB (MySQL is refused: dump and restore); on the source `log_bin` on "
        "with `binlog_format = ROW` (both need a restart), a non-zero `server_id`, TCP on, and a login with "
        "REPLICATION SLAVE and BINLOG MONITOR; on the target a non-zero `server_id`, SUPER or REPLICATION SLAVE "
        "ADMIN, and no other replication connection (the live pass sets `gtid_slave_pos`)."),
    bad="The source runs with the default `wal_level = replica`: the live pass could not create its slot.",
    fixed="`ALTER SYSTEM SET wal_level = logical;` and a restart of the source's server before the move.",
    source="PostgreSQL's documentation, Logical Replication: Configuration Settings and Restrictions.",
)

P414 = Rule(
    "P414", "a database's container is stopped by a Compose service before the plan uses it", ERROR,
    summary=(
        "A database declared with `container = \"NAME\"` is dumped, restored and dropped inside that "
        "container (`docker exec`). Docker tells which Compose project and service run the container "
        "(its `com.docker.compose.*` labels); when the last step before the database's use that stops "
        "or starts one of the plan's Compose services of that project, covering that service (it lists "
        "it, or names the whole project), is a `stop`, the container is stopped then, and the step would "
        "fail in the middle of the downtime. The checker cannot know which Compose service runs a "
        "container (H311 covers `container =` services); preflight asks Docker."),
    bad="`stop old_stack` (the whole Immich project, database included) before `dump old_pg`, whose "
        "container `immich_postgres` is the project's `database` service.",
    fixed="Stop only the app's services (`services = [\"immich-server\"]`), dump, then stop the rest.",
    source="Compose guides stop the whole stack (`docker compose down`) before a backup.",
)

RULES = (P401, P402, P403, P404, P405, P406, P407, P408, P409, P410, P411, P412, P413, P414)
