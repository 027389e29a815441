"""`replicate ... live` and its final pass compile to psql scripts on both servers, a schema feed, and
a tunnel opened for the live pass and closed by the final pass; the source's password reaches the
target only inside the subscription statement on psql's stdin, never an argv."""

from __future__ import annotations

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Feed, Tunnel
from mdsl.stores.postgres.replication import PORT_BASE, PORT_SPAN
from mdsl.syntax.parser import parse_text

PLAN = '''plan "r"
host old { ssh = "root@old.example.net" }
host new { ssh = "root@new.example.net" }
postgres old_db on old { database = "app"  user = "rep user"  tcp = "10.0.0.5:5433"  password = env("PW") }
postgres new_db on new { database = "app new"  run_as = "postgres" }
service old_app on old { systemd = ["app"]  writes = [old_db] }
steps {
  replicate old_db to new_db live OPTS
  stop old_app
  replicate old_db to new_db OPTS
}
'''


def compiled(opts: str = ""):
    bound = resolve(parse_text(PLAN.replace("OPTS", opts), "r.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def test_live_pass_opens_a_tunnel_from_the_target_to_the_source_server():
    cp = compiled()
    live, final = cp.steps[0], cp.steps[2]
    tunnels = [a for a in live.actions if isinstance(a, Tunnel)]
    assert len(tunnels) == 1
    t = tunnels[0]
    assert (t.from_host, t.address, t.port, t.to_host, t.close) == ("old", "10.0.0.5", 5433, "new", False)
    assert PORT_BASE <= t.listen < PORT_BASE + PORT_SPAN
    assert set(live.hosts) == {"old", "new"}
    # the final pass opens the same tunnel (a resumed run is a new process), and closes it last
    assert isinstance(final.actions[0], Tunnel) and final.actions[0].listen == t.listen
    assert isinstance(final.actions[-1], Tunnel) and final.actions[-1].close


def test_port_option_sets_the_tunnel_port_and_the_subscription_uses_it():
    cp = compiled("port = 45123")
    t = next(a for a in cp.steps[0].actions if isinstance(a, Tunnel))
    assert t.listen == 45123
    text = "\n".join(cp.steps[0].describe())
    assert "host=127.0.0.1 port=45123 user=''rep user'' dbname=app" in text


def test_password_goes_only_into_the_subscription_statement_on_stdin():
    cp = compiled()
    live = cp.steps[0]
    for a in live.actions:
        for c in a.commands():
            assert "password" not in c.render(masked=False)
    sub = next(a for a in live.actions if isinstance(a, Feed) and a.what.startswith("subscribe"))
    assert sub.command.host == "new"
    revealed = sub.command.stdin.reveal(lambda s: "it's a \\ secret").decode()
    # libpq-quoted inside a SQL literal: the quote doubled for SQL, escaped with a backslash for libpq
    assert "password=''it\\''s a \\\\ secret''" in revealed
    assert "***" in sub.command.stdin.masked() and "secret" not in sub.command.stdin.masked()


def test_final_pass_waits_copies_sequences_and_removes_everything():
    final = compiled().steps[2]
    whats = [a.what for a in final.actions if isinstance(a, Feed)]
    assert whats == ["finish copying old_db's rows", "wait until new_db has caught up",
                     "copy old_db's sequences into new_db", "end new_db's subscription",
                     "remove the slot and publication of old_db"]
    script = "\n".join(final.describe())
    assert "pg_drop_replication_slot" in script and "DROP PUBLICATION" in script
    assert "slot_name = NONE" in script and "setval" in script


def test_replica_identity_full_sets_it_instead_of_refusing():
    plain = "\n".join(compiled().steps[0].describe())
    full = "\n".join(compiled("replica_identity = full").steps[0].describe())
    assert "REPLICA IDENTITY FULL'" in full and "add a primary key" not in full
    assert "add a primary key" in plain


def test_final_pass_makes_the_apps_login_like_a_restore_does():
    text = PLAN.replace("OPTS", "").replace(
        'service old_app', 'login app_old on old_db { user = "app"  password = env("APP_PW")  tcp = "127.0.0.1:5432" }\n'
        'login app_new on new_db { user = "app"  socket = "/run/postgresql"  like = app_old }\nservice old_app')
    bound = resolve(parse_text(text, "r.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    cp = compile_plan(bound)
    live = [a.what for a in cp.steps[0].actions if hasattr(a, "what")]
    final = [a.what for a in cp.steps[2].actions if hasattr(a, "what")]
    assert not any("make role app" in w for w in live)
    assert any(w.startswith("make role app for app_new") for w in final)
    assert any("give app what" in w for w in final)
