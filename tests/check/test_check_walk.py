"""The symbolic walk: the worked example of HAZARDS.md step by step, the language
reference's example, real plans, parallel blocks, and the finer points of each rule."""

from __future__ import annotations


import pytest

from mdsl.check.resolve import resolve
from mdsl.check.rules.examples import DBS, FILES, HOSTS, MOVE, SERVICES, plan
from mdsl.check.walk import Walk
from mdsl.findings import Severity
from mdsl.syntax.parser import parse_text
from check_helpers import FIXTURES, REPO, findings_of

DECLS = HOSTS + "\n" + DBS + "\n" + FILES + "\n" + SERVICES


def loud(findings):
    """(code, line) of findings at warning or above."""
    return sorted((f.code, f.span.line) for f in findings if f.severity >= Severity.WARNING)


def codes(text, decls=DECLS):
    return [c for c, _ in loud(findings_of(plan(text, decls)))]


def line_of(text, needle, nth=0):
    return [i for i, line in enumerate(text.split("\n"), 1) if needle in line][nth]


# ---------------------------------------------------------------- the worked example


def _stepwise(text):
    """Walk a plan one top-level step at a time, yielding (step, walk) after each."""
    bound = resolve(parse_text(text, "seed.plan"))
    w = Walk(bound)
    for pos, step in enumerate(bound.steps):
        w.pos = pos
        w.dispatch(step)
        yield step, w


def _where(w, piece_name):
    """The places holding a piece, as `resource` or `host:path`."""
    piece = next(p for ps in w.pieces.values() for p in ps if p.name == piece_name)
    return sorted(k if isinstance(k, str) else f"{k[0]}:{k[1]}" for k in piece.holders)


SEED = (FIXTURES / "seed_as_it_went.plan").read_text()
REST = "old_files (outside its named subpaths)"


def test_seed_as_it_went_fires_h101_on_the_delete_and_h302_on_the_extract():
    findings = findings_of(SEED, "seed_as_it_went.plan")
    assert loud(findings) == [("H101", line_of(SEED, "  delete")), ("H302", line_of(SEED, "  extract"))]
    assert [f for f in findings if f.severity < Severity.WARNING] == []


def test_seed_h101_reads_like_hazards_md():
    h101 = next(f for f in findings_of(SEED, "seed_as_it_went.plan") if f.code == "H101")
    assert h101.severity == Severity.ERROR
    assert h101.message == "`delete` destroys data that has no other copy"
    assert h101.label == "old_files/cache exists only here"
    assert h101.notes == ("old_files (ubuntu:/home/mastodon/live/public/system) was never archived, synced "
                          "or transferred before this step",)
    assert h101.help.startswith("archive or move it first (`move` keeps it on the host), or, if it can be "
                                "rebuilt where the data goes, declare `derived \"cache\" rebuild \"CMD\"` "
                                "on old_files and exclude it from the copy")
    delete = SEED.split("\n")[line_of(SEED, "  delete") - 1]
    assert (h101.span.col, h101.span.end_col) == (3, len(delete) + 1)  # the caret spans the whole step


def test_seed_state_after_each_step_matches_the_table():
    states = {}
    for step, w in _stepwise(SEED):
        states[step.span.line] = (set(w.state.running), {n: _where(w, n) for n in
                                                         ("old_db", "old_files/cache", REST)},
                                  [f.code for f in w.findings if f.span.line == step.span.line])
    lines = sorted(states)
    stop, dump, delete, archive, t1, t2, restore, extract, start = (states[n] for n in lines)
    assert stop[0] == set()
    assert stop[1] == {"old_db": ["old_db"], "old_files/cache": ["old_files"], REST: ["old_files"]}
    assert dump[1]["old_db"] == ["old_db", "ubuntu:/root/backup.dump"] and dump[2] == []
    assert delete[1]["old_files/cache"] == [] and delete[2] == ["H101"]
    assert archive[1][REST] == ["old_files", "ubuntu:/root/public-system.tar.gz"]
    assert archive[1]["old_files/cache"] == []
    assert t1[1]["old_db"] == ["beetroot:/root/backup.dump", "old_db", "ubuntu:/root/backup.dump"]
    assert t2[1][REST] == ["beetroot:/root/public-system.tar.gz", "old_files", "ubuntu:/root/public-system.tar.gz"]
    assert "new_db" in restore[1]["old_db"] and restore[2] == []  # new_db is fresh: nothing lost
    assert "new_files" in extract[1][REST] and extract[2] == ["H302"]
    assert start[0] == {"new_app"} and start[2] == []


def test_seed_transfers_are_checksum_verified():
    *_, (step, w) = _stepwise(SEED)
    assert w.state.places[("beetroot", "/root/backup.dump")].verified


def test_the_cache_lost_through_h101_does_not_also_fire_h102():
    assert "H102" not in {f.code for f in findings_of(SEED)}


# ---------------------------------------------------------------- plans that must check clean


def test_language_reference_example_checks_clean():
    text = (FIXTURES / "language_example.plan").read_text()
    assert findings_of(text, "language_example.plan") == []


def test_docs_language_example_checks_clean():
    doc = REPO / "docs" / "language.md"
    if not doc.exists():
        pytest.skip("no docs/language.md")
    blocks = doc.read_text().split("```")
    assert loud(findings_of(blocks[1].partition("\n")[2], "docs/language.md")) == []


REAL_PLANS = sorted((REPO / "plans").glob("*.plan"))


@pytest.mark.parametrize("path", REAL_PLANS, ids=lambda p: p.name)
def test_real_plans_check_clean(path):
    assert loud(findings_of(path.read_text(), str(path))) == []


# ---------------------------------------------------------------- parallel blocks

PAR_DUMP = MOVE.replace(
    '  dump old_db to old:"/root/app.dump"\n  archive old_files to old:"/root/files.tar.gz"\n',
    '  parallel {\n    dump old_db to old:"/root/app.dump"\n    archive old_files to old:"/root/files.tar.gz"\n  }\n')


def test_parallel_members_on_different_data_do_not_conflict_and_their_effects_land_after():
    assert codes(PAR_DUMP) == []  # the transfers after the block find both artifacts


def test_parallel_member_sees_the_state_before_the_block():
    steps = PAR_DUMP.replace("  stop old_app\n  parallel {\n", "  parallel {\n    stop old_app\n")
    assert codes(steps) == ["H201", "H201"]


def test_parallel_reading_what_another_member_writes():
    steps = MOVE.replace('  transfer old:"/root/app.dump" to new:"/root/app.dump"\n', "").replace(
        '  restore new:"/root/app.dump" into new_db replace\n',
        '  parallel {\n    restore new:"/root/app.dump" into new_db replace\n'
        '    transfer old:"/root/app.dump" to new:"/root/app.dump"\n  }\n')
    text = plan(steps)
    found = findings_of(text)
    assert loud(found) == [("H203", line_of(text, "restore")), ("H204", line_of(text, "    transfer"))]
    h204 = next(f for f in found if f.code == "H204")
    assert "one writes what the other reads" in h204.message and "new:/root/app.dump" in h204.message


def test_parallel_start_counts_as_running_for_every_member():
    steps = MOVE.replace('  extract new:"/root/files.tar.gz" into new_files\n  start new_app\n',
                         '  parallel {\n    start new_app\n    extract new:"/root/files.tar.gz" into new_files\n  }\n')
    assert codes(steps) == ["H202"]


def test_verify_in_the_same_block_does_not_come_before_a_drop():
    verify = '  verify http "https://app.example.net/" via = new\n'
    steps = MOVE + "  parallel {\n" + verify.replace("  ", "    ", 1) + "    drop old_db\n  }\n"
    assert codes(steps) == ["H103"]
    assert codes(MOVE + verify + "  drop old_db\n") == []


def test_nested_parallel_conflicts_are_found():
    steps = MOVE + ('  parallel {\n    dump old_db to old:"/root/again.dump"\n'
                    '    parallel {\n      delete old:"/root/again.dump"\n    }\n  }\n')
    assert "H204" in codes(steps)


def test_parallel_services_conflict():
    assert "H204" in codes(MOVE + "  parallel {\n    stop new_app\n    restart new_app\n  }\n")


# ---------------------------------------------------------------- H1 details


def test_h101_takes_precedence_over_h103():
    # dropped with no copy at all: H101 only
    assert codes("  stop old_app\n  drop old_db\n  start old_app\n") == ["H101"]


def test_h103_a_dump_nobody_restored_is_not_a_way_back():
    # issue 16: the only other copy is a dump on the same host, never restored
    local = '  stop old_app\n  dump old_db to old:"/root/app.dump"\n  drop old_db\n  start old_app\n'
    text = plan(local)
    (h103,) = [f for f in findings_of(text) if f.code == "H103"]
    assert h103.span.line == line_of(text, "drop old_db")
    assert "only other copy is old:/root/app.dump (a PostgreSQL dump), which no step has restored yet" in h103.message
    assert any("not a way back until it was restored and a `verify` checked" in n for n in h103.notes)


def test_h103_a_dump_on_a_checked_host_is_not_a_way_back_either():
    steps = MOVE.replace('  restore new:"/root/app.dump" into new_db replace\n', "").replace(
        "  start new_app\n", '  verify run new "test -s /root/app.dump"\n  start new_app\n')
    assert "H103" in codes(steps + "  drop old_db\n")


def test_h103_a_restored_copy_needs_a_verify_where_it_is():
    # restored into a database on the same host and checked there: a way back
    decls = DECLS + 'postgres old_db16 on old { database = "app16"  run_as = "postgres"  fresh = true }\n'
    steps = ('  stop old_app\n  dump old_db to old:"/root/app.dump"\n'
             '  restore old:"/root/app.dump" into old_db16 replace\n')
    verify = '  verify run old "psql -d app16 -c \'select 1\'"\n'
    assert [f.code for f in findings_of(plan(steps + verify + "  drop old_db\n", decls)) if f.code == "H103"] == []
    unchecked = [f for f in findings_of(plan(steps + "  drop old_db\n", decls)) if f.code == "H103"]
    assert len(unchecked) == 1 and "before any `verify` checked its copies on old" in unchecked[0].message


def test_h203_help_says_how_to_use_a_file_that_was_there_before():
    # issue 16: a file that exists before the plan runs is declared as a `file` and used by name
    text = (FIXTURES / "H203" / "bad_preexisting.plan").read_text(encoding="utf-8")
    (h203,) = [f for f in findings_of(text) if f.code == "H203"]
    assert ('declared as a `file` and used by name: `file NAME on new { path = "/root/backup-by-hand.dump" }`, '
            'then `restore NAME ...`') in h203.help


def test_deleting_an_artifact_while_the_source_exists_is_fine():
    assert codes(MOVE + '  delete old:"/root/app.dump"\n  delete new:"/root/app.dump"\n') == []


def test_deleting_the_last_artifact_after_the_source_went_is_h101():
    verify = '  verify http "https://app.example.net/" via = new\n'
    steps = MOVE.replace('  restore new:"/root/app.dump" into new_db replace\n', "") + verify + (
        '  drop old_db\n  delete old:"/root/app.dump"\n  delete new:"/root/app.dump"\n')
    text = plan(steps)
    got = loud(findings_of(text))
    # (the drop is H103: the transferred dump was never restored, whatever the verify checked)
    assert got == [("H101", line_of(text, 'delete new:"/root/app.dump"')), ("H103", line_of(text, "drop old_db"))]


DERIVED_DECLS = DECLS.replace('dir old_files on old { path = "/srv/app/files"  owner = "app:app" }',
                              'dir old_files on old {\n  path = "/srv/app/files"  owner = "app:app"\n'
                              '  derived "cache" rebuild "app-rebuild-cache"\n}')


def test_derived_subpath_can_be_deleted_and_is_a_reminder():
    steps = MOVE.replace("  archive", '  delete old:"/srv/app/files/cache"\n  archive')
    found = findings_of(plan(steps, DERIVED_DECLS))
    # apply rebuilds it after `start new_app` itself: an info saying so
    assert [(f.code, f.severity) for f in found] == [("H102", Severity.INFO)]
    assert "apply runs `app-rebuild-cache` on new after new_app starts" in found[0].message
    found = findings_of(plan(steps + '  run new "sudo -u app app-rebuild-cache --all" writes = [new_files]\n',
                             DERIVED_DECLS))
    assert [(f.code, f.severity) for f in found] == [("H102", Severity.INFO)]
    assert "the `run` at line" in found[0].notes[0]


def test_a_rebuild_that_can_never_run_is_a_warning():
    # no service writing new_files starts after the copy: nowhere to run the rebuild after
    steps = MOVE.replace('"/root/files.tar.gz"\n', '"/root/files.tar.gz" exclude "cache"\n', 1)
    steps = steps.replace("  start new_app\n", "")
    found = [f for f in findings_of(plan(steps, DERIVED_DECLS)) if f.code == "H102"]
    assert [(f.code, f.severity) for f in found] == [("H102", Severity.WARNING)]
    assert "can never run on new" in found[0].message
    assert "no `start` of new_app follows" in found[0].notes[0]


def test_rebuild_run_before_the_copy_does_not_count():
    # the plan's early run is not the rebuild; apply's own step after `start new_app` is
    steps = ('  run new "app-rebuild-cache" writes = [new_files]\n'
             + MOVE.replace('"/root/files.tar.gz"\n', '"/root/files.tar.gz" exclude "cache"\n', 1))
    found = findings_of(plan(steps, DERIVED_DECLS))
    assert [(f.code, f.severity) for f in found] == [("H102", Severity.INFO)]
    assert "apply runs" in found[0].message


def test_excluding_a_nested_subpath_splits_the_dir_at_both():
    steps = MOVE.replace('"/root/files.tar.gz"\n', '"/root/files.tar.gz" exclude "cache/tmp"\n', 1)
    h102 = [f for f in findings_of(plan(steps)) if f.code == "H102"]
    assert [f.message for f in h102] == ["old_files/cache/tmp never reaches new_files"]


def test_restore_replace_into_data_that_is_not_fresh():
    decls = DECLS.replace('run_as = "app"  fresh = true', 'run_as = "app"')
    assert codes(MOVE, decls) == ["H101"]


def test_overwriting_an_unused_artifact_is_h104_but_reusing_a_used_path_is_fine():
    again = '  dump old_db to old:"/root/app.dump"\n'
    assert codes(MOVE + again) == []
    assert codes(MOVE.replace("  archive", again + "  archive", 1)) == ["H104"]


# ---------------------------------------------------------------- H2 details


def test_h205_and_not_also_h202_for_an_early_start():
    steps = MOVE.replace("  start new_app\n", "").replace("  restore", "  start new_app\n  restore")
    assert codes(steps) == ["H205"]


def test_restart_of_a_running_service_is_not_a_start():
    assert codes(MOVE + "  restart new_app\n") == []


def test_running_from_the_start_is_named():
    found = findings_of(plan(MOVE.replace("  stop old_app\n", "") + "  stop old_app\n"))
    h201 = next(f for f in found if f.code == "H201")
    assert "old_app is running from the start" in h201.notes[0]


def test_wrong_kind_restore_of_an_archive():
    steps = MOVE.replace('restore new:"/root/app.dump"', 'restore new:"/root/files.tar.gz"')
    assert "H203" in codes(steps)


# ---------------------------------------------------------------- H3 details


def test_h301_names_the_missing_units():
    decls = DECLS.replace('service old_app on old { systemd = ["app"]',
                          'service old_app on old { systemd = ["app", "app-worker", "app-cron.timer"]')
    found = [f for f in findings_of(plan(MOVE, decls)) if f.code == "H301"]
    assert len(found) == 1 and "app-worker, app-cron.timer" in found[0].message


def test_h301_is_satisfied_by_the_old_service_running_again():
    assert codes("  stop old_app\n  start old_app\n") == []


def test_verify_http_without_via_checks_the_hosts_of_running_services():
    assert codes(MOVE + '  verify http "https://app.example.net/health"\n  drop old_db\n') == []
    # before the new service starts, the only running service is on the old host
    steps = MOVE.replace("  start new_app\n", "") + (
        '  delete old:"/root/app.dump"\n'
        '  start old_app\n  verify http "https://app.example.net/health"\n  stop old_app\n  drop old_db\n'
        "  start new_app\n")
    assert "H103" in codes(steps)


def test_dns_confirm_about_ttl_is_preparation():
    assert codes('  confirm "Lower the DNS TTL of app.example.net to 300 s"\n' + MOVE) == []


def test_dns_confirm_naming_a_tested_host():
    verify = '  verify http "https://app.example.net/" via = new\n'
    confirm = '  confirm "Switch app.example.net\'s DNS to new"\n'
    assert codes(MOVE + confirm) == ["H307"]
    assert codes(MOVE + verify + confirm) == []


@pytest.mark.parametrize("command, fires", [
    ("PGPASSWORD=s3cret pg_dumpall", True),
    ("PGPASSWORD=$DB_PASSWORD pg_dumpall", False),
    ("curl -H 'Authorization: Bearer abcdef0123456789' https://x", True),
    ("curl https://admin:hunter22@example.net/", True),
    ("app --token-file=/run/secrets/token", False),
    ("tootctl feeds build", False),
])
def test_h304_in_commands(command, fires):
    text = MOVE + f'  run new "{command}"\n'
    assert ("H304" in codes(text)) is fires


@pytest.mark.parametrize("command, options, fires", [
    ("rm -rf /tmp/x", "", True),
    ("sudo -u postgres dropdb app", "", True),
    ("rm -rf /srv/app/files/tmp", "writes = [new_files]", False),
    ("du -sh /srv/app/files", "reads = [new_files]", False),
    ("du -sh /srv/app/files", "", True),
    ("du -sh /srv/app/filesystem", "", False),
    ("du -sh /srv/app/files/cache/x.png", "", True),
    ("cat x:/srv/app/files", "", True),
    ("du -sh /srv/app/files.bak /srv/app/files-old", "", False),
    ("du -sh srv/app/files", "", False),
    ("app-ctl feeds build", "", False),
])
def test_h305_cases(command, options, fires):
    text = MOVE + f'  run new "{command}" {options}\n'
    assert ("H305" in codes(text)) is fires


def test_h305_names_the_longest_declared_path_of_a_word_and_paths_with_spaces():
    nested = DECLS.replace('dir new_files on new { path = "/srv/app/files"  owner = "app:app" }',
                           'dir new_files on new { path = "/srv/app/files"  owner = "app:app" }\n'
                           'dir new_cache on new { path = "/srv/app/files/cache" }\n'
                           'dir new_media on new { path = "/srv/app/My Media" }')
    assert nested != DECLS

    def h305(command):
        return [f.message for f in findings_of(plan(MOVE + f"  run new \"{command}\"\n", nested)) if f.code == "H305"]

    assert h305("du -sh /srv/app/files/cache/a") == ["`run` mentions the path of new_cache but does not declare it"]
    assert h305("du -sh /srv/app/files/other") == ["`run` mentions the path of new_files but does not declare it"]
    assert h305("ls '/srv/app/My Media/x'") == ["`run` mentions the path of new_media but does not declare it"]
    assert h305("ls /srv/app/My") == []


def test_h306_restore_jobs_with_custom_format_is_fine():
    assert codes(MOVE.replace("into new_db replace", "into new_db replace jobs = 4")) == []


def test_h302_says_how_tar_and_rsync_map_owners():
    # issue 17 item 13: by name where the target has it (tar -xp and rsync -a as root), not "numeric uids"
    text = plan(MOVE, DECLS.replace('dir new_files on new { path = "/srv/app/files"  owner = "app:app" }',
                                    'dir new_files on new { path = "/srv/app/files" }'))
    h302 = [f for f in findings_of(text) if f.code == "H302"]
    assert len(h302) == 1
    assert "by name where the target has that user, else by numeric id" in h302[0].message
    assert "numeric uids" not in h302[0].message
