"""Every construct of the plan language parses to the AST it means (LANGUAGE.md)."""

from __future__ import annotations

import pytest

from mdsl.syntax import ast as A
from syntax_helpers import parse

HOSTS = 'host h { local = true }\nhost g { ssh = "root@g" }\n'


def one_decl(text):
    plan = parse(text)
    assert len(plan.decls) == 1
    return plan.decls[0]


def one_step(step_text):
    plan = parse("steps {\n  " + step_text + "\n}\n")
    assert len(plan.steps) == 1, plan.steps
    return plan.steps[0]


def attr(decl, key):
    for a in decl.attrs:
        if a.key.name == key:
            return a.value
    raise KeyError(key)


# ---------------------------------------------------------------- the whole example


def test_language_example_parses_to_the_expected_shape(example_text):
    plan = parse(example_text, "example.plan")
    assert plan.title == A.Str("Mastodon: Ubuntu box -> NixOS (beetroot)")
    kinds = [(getattr(d, "kind", None), d.name.name) for d in plan.decls]
    assert kinds == [
        ("host", "ubuntu"), ("host", "beetroot"), ("host", "here"),
        ("postgres", "old_db"), ("postgres", "new_db"), ("sqlite", "notes"),
        ("dir", "old_files"), ("dir", "new_files"), ("service", "old_app"), ("service", "new_app"),
    ]
    assert [type(s).__name__ for s in plan.steps] == [
        "Stop", "Parallel", "Transfer", "Transfer", "Restore", "Extract", "Start", "VerifyHttp"]
    assert [type(s).__name__ for s in plan.steps[1].steps] == ["Dump", "Archive"]
    assert len(plan.comments) == 7
    assert plan.path == "example.plan"


# ---------------------------------------------------------------- declarations


def test_plan_title():
    assert parse('plan "A \\"quoted\\" title"').title == A.Str('A "quoted" title')


def test_empty_file_is_an_empty_plan():
    plan = parse("")
    assert (plan.title, plan.decls, plan.steps) == (None, (), ())
    assert parse("# only a comment\n\n").decls == ()


def test_host_ssh_port_identity_sudo():
    d = one_decl('host b { ssh = "root@1.2.3.4"  port = 2222  identity = "/k"  sudo = true '
                 ' sudo_password = env("SUDO_PW") }')
    assert isinstance(d, A.HostDecl) and d.kind == "host" and d.name == A.Ident("b")
    assert attr(d, "ssh") == A.Str("root@1.2.3.4")
    assert attr(d, "port") == A.Int(2222)
    assert attr(d, "identity") == A.Str("/k")
    assert attr(d, "sudo") == A.Bool(True)
    assert attr(d, "sudo_password") == A.Secret("env", "SUDO_PW")


def test_host_local():
    d = one_decl("host here { local = true }")
    assert attr(d, "local") == A.Bool(True)


def test_host_with_empty_body():
    assert one_decl("host x { }").attrs == ()


def test_postgres_declaration():
    d = one_decl('postgres old_db on ubuntu {\n  database = "m"\n  user = "u"\n  tcp = "127.0.0.1:5432"\n'
                 '  password = env("PW")\n  run_as = "mastodon"\n  fresh = false\n}')
    assert isinstance(d, A.ResourceDecl)
    assert (d.kind, d.name.name, d.host.name) == ("postgres", "old_db", "ubuntu")
    assert attr(d, "database") == A.Str("m")
    assert attr(d, "password") == A.Secret("env", "PW")
    assert attr(d, "fresh") == A.Bool(False)


def test_postgres_socket_and_file_secret():
    d = one_decl('postgres p on h { socket = "/run/postgresql" password = file("/etc/pw") }')
    assert attr(d, "socket") == A.Str("/run/postgresql")
    assert attr(d, "password") == A.Secret("file", "/etc/pw")
    assert attr(d, "password").masked() == 'file("/etc/pw")'


def test_sqlite_declaration():
    d = one_decl('sqlite notes on here { path = "/srv/notes.db" fresh = true }')
    assert (d.kind, attr(d, "path"), attr(d, "fresh")) == ("sqlite", A.Str("/srv/notes.db"), A.Bool(True))


def test_dir_declaration_with_repeated_derived():
    d = one_decl('dir files on h {\n  path = "/srv"\n  owner = "a:b"\n  mode = "0750"\n'
                 '  derived "cache" rebuild "tootctl refresh"\n  derived "tmp/x" rebuild "true"\n}')
    assert d.kind == "dir"
    assert attr(d, "owner") == A.Str("a:b")
    assert d.derived == (A.Derived(A.Str("cache"), A.Str("tootctl refresh")),
                         A.Derived(A.Str("tmp/x"), A.Str("true")))


def test_file_declaration():
    d = one_decl('file env on h { path = "/e" owner = "m:m" mode = "0600" secret = true fresh = true }')
    assert d.kind == "file" and attr(d, "secret") == A.Bool(True) and attr(d, "mode") == A.Str("0600")


@pytest.mark.parametrize("kind", ["mysql", "redis", "volume", "postgress", "stop", "on", "file"])
def test_a_resource_kind_is_any_name(kind):
    """The grammar knows no kinds (the resolver does): a new store kind needs no grammar change."""
    d = one_decl(f'{kind} db on h {{ path = "/x" }}')
    assert isinstance(d, A.ResourceDecl) and d.kind == kind and type(d.kind) is str
    assert (d.name.name, d.host.name) == ("db", "h")


def test_kind_words_stay_names_elsewhere():
    plan = parse('host postgres { local = true }\ndir sqlite on postgres { path = "/x" }\n'
                 "steps {\n  service: stop dir, file\n}\n")
    assert plan.decls[1].name.name == "sqlite" and plan.decls[1].host.name == "postgres"
    assert [n.name for n in plan.steps[0].services] == ["dir", "file"]


def test_service_systemd_lists_and_initially():
    d = one_decl('service app on h {\n  systemd = ["a", "b-c", "d@1"]\n  writes = [db, files]\n'
                 '  reads = [old_env]\n  initially = stopped\n}')
    assert attr(d, "systemd") == A.ListValue((A.Str("a"), A.Str("b-c"), A.Str("d@1")))
    assert attr(d, "writes") == A.ListValue((A.Ref("db"), A.Ref("files")))
    assert attr(d, "reads") == A.ListValue((A.Ref("old_env"),))
    assert attr(d, "initially") == A.Ref("stopped")


def test_keywords_as_attribute_keys():
    d = one_decl('service app on h { start = "s" stop = "cmd" status = "st" file = "f" verify = false }')
    keys = [a.key.name for a in d.attrs]
    assert keys == ["start", "stop", "status", "file", "verify"]
    assert attr(d, "stop") == A.Str("cmd")
    assert attr(d, "verify") == A.Bool(False)


def test_attribute_values_of_every_type():
    d = one_decl('host h { s = "x" i = 42 t = true f = false r = name l = [] l2 = [a] '
                 'l3 = ["x", 1, true, b] e = env("E") fs = file("/p") }')
    vals = {a.key.name: a.value for a in d.attrs}
    assert vals == {
        "s": A.Str("x"), "i": A.Int(42), "t": A.Bool(True), "f": A.Bool(False), "r": A.Ref("name"),
        "l": A.ListValue(()), "l2": A.ListValue((A.Ref("a"),)),
        "l3": A.ListValue((A.Str("x"), A.Int(1), A.Bool(True), A.Ref("b"))),
        "e": A.Secret("env", "E"), "fs": A.Secret("file", "/p"),
    }


def test_string_escapes():
    d = one_decl(r'host h { a = "q\"q" b = "back\\slash" c = "line\nbreak" d = "tab\there" e = "" }')
    vals = {a.key.name: a.value.value for a in d.attrs}
    assert vals == {"a": 'q"q', "b": "back\\slash", "c": "line\nbreak", "d": "tab\there", "e": ""}


def test_non_ascii_strings_and_tab_inside():
    d = one_decl('host h { a = "héllo → 世界" b = "a\tb" }')
    assert attr(d, "a") == A.Str("héllo → 世界")
    assert attr(d, "b") == A.Str("a\tb")


def test_declarations_in_any_order_and_steps_anywhere():
    plan = parse('steps { stop app }\nservice app on h { systemd = ["x"] }\nplan "t"\nhost h { local = true }')
    assert [d.name.name for d in plan.decls] == ["app", "h"]
    assert plan.title == A.Str("t") and len(plan.steps) == 1


def test_windows_line_endings():
    plan = parse('host h {\r\n  ssh = "a@b"\r\n}\r\nsteps {\r\n  stop x\r\n}\r\n')
    assert attr(plan.decls[0], "ssh") == A.Str("a@b")
    assert plan.steps == (A.Stop(services=(A.Ident("x"),)),)


# ---------------------------------------------------------------- steps


def test_stop_start_restart_with_several_services():
    assert one_step("stop a") == A.Stop(services=(A.Ident("a"),))
    assert one_step("start a, b") == A.Start(services=(A.Ident("a"), A.Ident("b")))
    assert one_step("restart a , b,c") == A.Restart(services=(A.Ident("a"), A.Ident("b"), A.Ident("c")))


def test_dump_with_options():
    s = one_step('dump old_db to ubuntu:"/root/b.dump" format = custom jobs = 4')
    assert s == A.Dump(db=A.Ident("old_db"), to=A.Location(A.Ident("ubuntu"), A.Str("/root/b.dump")),
                       options=(A.Option(A.Ident("format"), A.Ref("custom")),
                                A.Option(A.Ident("jobs"), A.Int(4))))
    assert s.option("jobs").value == A.Int(4)
    assert s.option("nope") is None


def test_restore_with_flag_and_kv_option():
    s = one_step('restore b:"/x.dump" into new_db replace jobs = 2')
    assert s == A.Restore(source=A.Location(A.Ident("b"), A.Str("/x.dump")), db=A.Ident("new_db"),
                          options=(A.Option(A.Ident("replace"), None), A.Option(A.Ident("jobs"), A.Int(2))))


def test_archive_with_exclude_list_and_compress():
    s = one_step('archive files to u:"/a.tar.zst" exclude "cache", "tmp/x" compress = zstd')
    assert s.dir == A.Ident("files")
    assert s.option("exclude").value == A.ListValue((A.Str("cache"), A.Str("tmp/x")))
    assert s.option("compress").value == A.Ref("zstd")


def test_extract_replace():
    s = one_step('extract b:"/a.tar.gz" into new_files replace')
    assert s == A.Extract(source=A.Location(A.Ident("b"), A.Str("/a.tar.gz")), dir=A.Ident("new_files"),
                          options=(A.Option(A.Ident("replace"), None),))


def test_sync_with_exclude():
    s = one_step('sync old_files to new_files exclude "cache"')
    assert (s.source, s.dest) == (A.Ident("old_files"), A.Ident("new_files"))
    assert s.option("exclude").value == A.ListValue((A.Str("cache"),))


def test_transfer_locations_names_and_keyword_keys():
    s = one_step('transfer u:"/a" to b:"/a" via = rsync verify = false')
    assert isinstance(s, A.Transfer)
    assert s.option("via").value == A.Ref("rsync")
    assert s.option("verify").value == A.Bool(False)
    s = one_step("transfer old_env to new_env")  # a file name stands for its location
    assert (s.source, s.dest) == (A.Ident("old_env"), A.Ident("new_env"))


def test_move_delete_drop():
    assert one_step('move h:"/a" to h:"/b"') == A.Move(source=A.Location(A.Ident("h"), A.Str("/a")),
                                                       dest=A.Location(A.Ident("h"), A.Str("/b")))
    assert one_step('delete h:"/a/cache"') == A.Delete(target=A.Location(A.Ident("h"), A.Str("/a/cache")))
    assert one_step("delete old_env") == A.Delete(target=A.Ident("old_env"))
    assert one_step("drop old_db") == A.Drop(db=A.Ident("old_db"))


def test_run_with_reads_writes_deletes():
    s = one_step('run h "tootctl feeds build" reads = [a] writes = b deletes = [c, d] run_as = "m"')
    assert (s.host, s.command) == (A.Ident("h"), A.Str("tootctl feeds build"))
    assert s.option("reads").value == A.ListValue((A.Ref("a"),))
    assert s.option("writes").value == A.Ref("b")
    assert s.option("deletes").value == A.ListValue((A.Ref("c"), A.Ref("d")))


def test_verify_http_dns_run():
    s = one_step('verify http "https://x/health" via = beetroot status = 200 contains = "ok"')
    assert isinstance(s, A.VerifyHttp) and s.url == A.Str("https://x/health")
    assert s.option("via").value == A.Ref("beetroot") and s.option("status").value == A.Int(200)
    assert one_step('verify dns "m.example" is beetroot') == A.VerifyDns(name=A.Str("m.example"),
                                                                        host=A.Ident("beetroot"))
    assert one_step('verify run h "curl -f localhost"') == A.VerifyRun(host=A.Ident("h"),
                                                                      command=A.Str("curl -f localhost"))


def test_confirm():
    assert one_step('confirm "Point DNS at the new box"') == A.Confirm(message=A.Str("Point DNS at the new box"))


def test_every_step_takes_a_timeout_option():
    s = one_step("stop a timeout = 30")
    assert s.option("timeout").value == A.Int(30)


def test_parallel_block():
    s = one_step('parallel {\n    dump d to h:"/a"\n    archive f to h:"/b"\n  }')
    assert isinstance(s, A.Parallel)
    assert [type(x) for x in s.steps] == [A.Dump, A.Archive]
    assert list(A.walk_steps([s])) == [s, *s.steps]


def test_nested_parallel_and_empty_blocks():
    s = one_step("parallel { parallel { stop a } stop b }")
    assert isinstance(s.steps[0], A.Parallel)
    assert parse("steps { }").steps == ()
    assert one_step("parallel { }") == A.Parallel(steps=())


def test_labels_on_steps_and_parallel():
    s = one_step('backup: dump d to h:"/a"')
    assert s.label == A.Ident("backup")
    assert s.label.span.col == 3 and s.label.span.end_col == 9
    assert one_step("freeze : stop app").label == A.Ident("freeze")
    p = one_step("both: parallel { x: stop a }")
    assert p.label == A.Ident("both") and p.steps[0].label == A.Ident("x")


def test_location_is_never_a_label():
    s = one_step('delete backup:"/x"')
    assert s.label is None and s.target.host == A.Ident("backup")
    s = one_step('transfer a : "/x" to b:"/y"')
    assert s.source == A.Location(A.Ident("a"), A.Str("/x"))


def test_steps_on_one_line_and_across_lines():
    plan = parse('steps { stop a start b\n dump d\n to\n h:"/x"\n format = custom }')
    assert [type(s) for s in plan.steps] == [A.Stop, A.Start, A.Dump]
    assert plan.steps[2].option("format").value == A.Ref("custom")


# ---------------------------------------------------------------- comments and suppressions


def test_comments_are_kept_with_spans():
    plan = parse('# head\nhost h { local = true } # tail\nsteps {\n  # inside\n  stop a\n}\n#end')
    assert [c.text for c in plan.comments] == ["# head", "# tail", "# inside", "#end"]
    assert [(c.span.line, c.span.col) for c in plan.comments] == [(1, 1), (2, 25), (4, 3), (7, 1)]


def test_hash_inside_a_string_is_not_a_comment():
    plan = parse('host h { ssh = "a#b@c" }')
    assert plan.comments == () and attr(plan.decls[0], "ssh") == A.Str("a#b@c")


def test_suppressions_with_and_without_reason():
    plan = parse('steps {\n  # mdsl: allow H102 "cache is rebuilt"\n  archive f to h:"/a" exclude "cache"'
                 '  # mdsl: allow H201 "no writer"\n  # mdsl: allow H103\n  stop x\n  # mdsl: allow H1\n'
                 '  # mdsl: allow H102 ""\n  # mdsl: bogus\n  # an ordinary comment\n}')
    sup = [(s.code, s.reason, s.span.line) for s in plan.suppressions]
    assert sup == [("H102", "cache is rebuilt", 2), ("H201", "no writer", 3), ("H103", None, 4),
                   ("", None, 6), ("H102", None, 7), ("", None, 8)]


# ---------------------------------------------------------------- spans


def test_spans_are_one_based_and_end_exclusive():
    plan = parse('host h { local = true }\nsteps {\n  dump db to h:"/x"  format = custom\n}')
    d = plan.decls[0]
    assert (d.span.line, d.span.col, d.span.end_line, d.span.end_col) == (1, 1, 1, 24)
    s = plan.steps[0]
    assert (s.span.line, s.span.col, s.span.end_col) == (3, 3, 37)
    assert (s.to.span.col, s.to.span.end_col) == (14, 20)
    assert (s.to.path.span.col, s.to.path.span.end_col) == (16, 20)
    assert plan.steps_span.line == 2 and plan.steps_span.end_line == 4


def test_columns_count_characters_not_bytes():
    plan = parse('host h { a = "ééé" b = 1 }')
    b = plan.decls[0].attrs[1]
    assert b.key.span.col == 20


def test_equality_ignores_spans():
    a = parse('host h { local = true }\nsteps { stop a }')
    b = parse('\n\n   host   h{local=true}steps{\n\nstop    a}', "other.plan")
    assert a.decls == b.decls and a.steps == b.steps
    assert a.decls[0].span != b.decls[0].span


@pytest.mark.parametrize("word", ["host", "postgres", "sqlite", "dir", "file", "service", "steps", "plan"])
def test_top_level_keywords_as_keys(word):
    d = one_decl(f"host h {{ {word} = 1 }}")
    assert d.attrs[0].key.name == word
