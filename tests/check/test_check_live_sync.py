"""`sync ... live`: a pass while the writers run is provisional, not H201; a final sync of the same
dirs with the writers stopped completes it; any use of the provisional copy before that, or no
final sync at all, is H201 at the live sync. Live passes and their final passes mirror the source
(rsync --delete), which the data-loss rules know."""

from __future__ import annotations

import pytest

from mdsl.check.resolve import resolve
from mdsl.check.walk import Walk
from mdsl.findings import Severity
from mdsl.syntax.parser import parse_text
from check_helpers import FIXTURES, REPO, findings_of

EXAMPLE = REPO / "plans" / "examples" / "presync.plan"

DECLS = '''host old { ssh = "root@old.example.net" }
host new { ssh = "root@new.example.net" }
postgres old_db on old { database = "app"  password = env("APP_DB_PASSWORD") }
dir old_files on old { path = "/srv/app/files"  owner = "app:app" }
dir new_files on new { path = "/srv/app/files"  owner = "app:app"  fresh = true }
dir other on new { path = "/srv/other"  owner = "app:app"  fresh = true }
service old_app on old { systemd = ["app"]  writes = [old_db, old_files] }
service new_app on new { systemd = ["app"]  writes = [new_files]  initially = stopped }
service reader on new { systemd = ["reader"]  reads = [new_files]  initially = stopped }
'''


def check(steps: str, decls: str = DECLS):
    text = f'plan "live"\n{decls}\nsteps {{\n{steps}}}\n'
    return text, findings_of(text, "live.plan")


def loud(findings):
    return sorted((f.code, f.span.line) for f in findings if f.severity >= Severity.WARNING)


def line_of(text, needle):
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


LIVE = "  sync old_files to new_files live\n"
FINAL = "  sync old_files to new_files\n"


# ---------------------------------------------------------------- the clean shape


def test_the_example_checks_clean():
    assert findings_of(EXAMPLE.read_text(), str(EXAMPLE)) == []


def test_live_then_stop_then_final_is_clean():
    _, f = check(LIVE + "  stop old_app\n" + FINAL + "  start new_app\n")
    assert f == []


def test_without_live_the_same_first_pass_is_h201():
    text, f = check(FINAL + "  stop old_app\n" + FINAL + "  start new_app\n")
    assert loud(f) == [("H201", line_of(text, "sync old_files"))]


def test_state_marks_the_copy_provisional_until_the_final_sync():
    text = f'plan "live"\n{DECLS}\nsteps {{\n{LIVE}  stop old_app\n{FINAL}}}\n'
    bound = resolve(parse_text(text, "live.plan"))
    w = Walk(bound)
    seen = []
    for pos, step in enumerate(bound.steps):
        w.pos = pos
        w.dispatch(step)
        seen.append(sorted(w.state.provisional))
    assert seen == [["new_files"], ["new_files"], []]
    prov_step = bound.steps[0]
    assert prov_step.live and not bound.steps[2].live


# ---------------------------------------------------------------- a missing or late final sync


def test_no_final_sync_is_h201_at_the_live_sync():
    text, f = check(LIVE + "  stop old_app\n")
    h = [x for x in f if x.code == "H201"]
    assert [(x.span.line, x.severity) for x in h] == [(line_of(text, "new_files live"), Severity.ERROR)]
    assert "no final `sync old_files to new_files` follows with old_app stopped" in h[0].message
    assert "add `sync old_files to new_files` (without `live`)" in h[0].help
    assert any("running from the start" in n for n in h[0].notes)


def test_final_sync_while_the_writer_runs_is_h201_there_only():
    text, f = check(LIVE + FINAL + "  stop old_app\n")
    h = [x for x in f if x.code == "H201"]
    assert [x.span.line for x in h] == [line_of(text, "new_files live") + 1]
    assert h[0].message.startswith("`sync` copies old_files while old_app may be writing it")


def test_final_sync_of_another_source_does_not_complete_it():
    text, f = check(LIVE + "  stop old_app\n  sync other to new_files\n")
    h = [x for x in f if x.code == "H201"]
    assert [x.span.line for x in h] == [line_of(text, "new_files live")]
    assert "the `sync` at line" in h[0].message and "writes other into new_files" in h[0].message


def test_final_sync_that_excludes_what_the_live_pass_copied():
    text, f = check(LIVE + "  stop old_app\n" + '  sync old_files to new_files exclude "cache"\n')
    h = [x for x in f if x.code == "H201"]
    assert [x.span.line for x in h] == [line_of(text, "new_files live")]
    assert 'excludes "cache", which this pass copied' in h[0].message


def test_final_sync_excluding_less_than_the_live_pass_is_fine():
    _, f = check('  sync old_files to new_files live exclude "cache"\n  stop old_app\n' + FINAL)
    assert "H201" not in {x.code for x in f}


def test_two_live_passes_then_a_final_one():
    _, f = check(LIVE + LIVE + "  stop old_app\n" + FINAL)
    assert "H201" not in {x.code for x in f}


def test_live_sync_in_a_parallel_block_with_the_stop_is_still_live():
    _, f = check("  parallel {\n    stop old_app\n    sync old_files to new_files live\n  }\n" + FINAL)
    assert "H201" not in {x.code for x in f}
    text, f = check("  parallel {\n    stop old_app\n    sync old_files to new_files live\n  }\n")
    assert [x.span.line for x in f if x.code == "H201"] == [line_of(text, "new_files live")]


# ---------------------------------------------------------------- uses of the provisional copy


@pytest.mark.parametrize("use, says", [
    ('  archive new_files to new:"/root/f.tar"\n', "the `archive` at line {n} copies new_files"),
    ("  sync new_files to other\n", "the `sync` at line {n} copies new_files"),
    ('  transfer new:"/srv/app/files/a" to new:"/root/a"\n', "the `transfer` at line {n} copies new_files"),
    ('  move new:"/srv/app/files/a" to new:"/root/a"\n', "the `move` at line {n} moves new_files"),
    ('  extract new:"/root/f.tar" into new_files\n', "the `extract` at line {n} writes into new_files"),
    ("  start new_app\n", "the `start` at line {n} starts new_app, which writes new_files"),
    ("  start reader\n", "the `start` at line {n} starts reader, which reads new_files"),
    ('  run new "du -s /srv/app/files" reads = [new_files]\n', "the `run` at line {n} reads new_files"),
    ('  verify run new "true"\n', "the `verify run` at line {n} checks new, where new_files is still torn"),
    ('  verify http "https://x/health" via = new\n', "the `verify http` at line {n} checks new"),
    ('  delete old:"/srv/app/files"\n', "the `delete` at line {n} deletes old_files"),
    ('  run old "rm -rf /srv/app/files" deletes = [old_files]\n', "the `run` at line {n} deletes old_files"),
    ('  move old:"/srv/app/files" to old:"/srv/app/files.old"\n', "the `move` at line {n} moves old_files away"),
])
def test_using_the_copy_before_the_final_sync_is_h201_at_the_live_sync(use, says):
    pre = '  archive old_files to new:"/root/f.tar"\n' if "extract" in use else ""
    text, f = check(LIVE + "  stop old_app\n" + pre + use + FINAL)
    h = [x for x in f if x.code == "H201"]
    n = line_of(text, use.strip())
    assert [x.span.line for x in h] == [line_of(text, "new_files live")], [(x.span.line, x.message) for x in f]
    assert says.format(n=n) in h[0].message
    assert f"before line {n}" in h[0].help


def test_a_use_after_the_final_sync_is_fine():
    _, f = check(LIVE + "  stop old_app\n" + FINAL + '  archive new_files to new:"/root/f.tar"\n  start reader\n'
                 '  verify run new "true"\n')
    assert "H201" not in {x.code for x in f}


def test_a_use_on_another_host_or_of_other_data_is_fine():
    _, f = check(LIVE + '  verify run old "true"\n  stop old_app\n  dump old_db to old:"/root/db.dump"\n' + FINAL)
    assert "H201" not in {x.code for x in f}


def test_deleting_a_subpath_of_the_source_between_the_passes_is_fine():
    _, f = check(LIVE + '  delete old:"/srv/app/files/tmp"\n  stop old_app\n' + FINAL)
    assert "H201" not in {x.code for x in f}


def test_discarding_the_provisional_copy_is_fine():
    _, f = check(LIVE + '  delete new:"/srv/app/files"\n  stop old_app\n')
    assert "H201" not in {x.code for x in f}


def test_each_live_sync_is_reported_once():
    text, f = check(LIVE + '  archive new_files to new:"/root/f.tar"\n  start reader\n')
    assert [x.span.line for x in f if x.code == "H201"] == [line_of(text, "new_files live")]


def test_chained_live_syncs_report_the_first_used_copy():
    text, f = check(LIVE + "  sync new_files to other live\n  stop old_app\n" + FINAL)
    h = [x for x in f if x.code == "H201"]
    # new_files is copied onward while torn; `other` has no writer running, so its pass is an info
    assert [(x.span.line, x.severity) for x in h] == [(line_of(text, "new_files live"), Severity.ERROR),
                                                      (line_of(text, "to other live"), Severity.INFO)]


# ---------------------------------------------------------------- nothing to gain


def test_live_sync_without_a_running_writer_is_an_info_and_final():
    text, f = check("  stop old_app\n" + LIVE + "  start new_app\n")
    h = [x for x in f if x.code == "H201"]
    assert [(x.span.line, x.severity) for x in h] == [(line_of(text, "new_files live"), Severity.INFO)]
    assert "nothing to gain" in h[0].message and "old_app stopped at line" in h[0].notes[0]


def test_live_sync_of_a_dir_nobody_writes():
    text, f = check("  sync other to new_files live\n  start new_app\n")
    h = [x for x in f if x.code == "H201"]
    assert [x.severity for x in h] == [Severity.INFO]
    assert "no service declares `writes = [other]`" in h[0].help


# ---------------------------------------------------------------- mirroring


def test_a_live_sync_into_data_that_is_not_fresh_is_h101():
    decls = DECLS.replace('owner = "app:app"  fresh = true }\ndir other', 'owner = "app:app" }\ndir other')
    text, f = check(LIVE + "  stop old_app\n" + FINAL, decls)
    h = [x for x in f if x.code == "H101"]
    assert [x.span.line for x in h] == [line_of(text, "new_files live")]
    assert "mirroring `sync`" in h[0].message and "declare `fresh = true` on new_files" in h[0].help


def test_a_plain_sync_into_data_that_is_not_fresh_merges():
    decls = DECLS.replace('owner = "app:app"  fresh = true }\ndir other', 'owner = "app:app" }\ndir other')
    _, f = check("  stop old_app\n" + FINAL, decls)
    assert "H101" not in {x.code for x in f}


def test_an_excluded_subpath_of_the_target_is_kept_by_the_mirror():
    decls = DECLS.replace('dir new_files on new { path = "/srv/app/files"  owner = "app:app"  fresh = true }',
                          'dir new_files on new { path = "/srv/app/files"  owner = "app:app" }')
    steps = ('  delete new:"/srv/app/files/rest"\n'
             '  sync old_files to new_files live exclude "cache", "rest"\n  stop old_app\n'
             '  sync old_files to new_files exclude "cache", "rest"\n')
    text = f'plan "live"\n{decls}\nsteps {{\n{steps}}}\n'
    bound = resolve(parse_text(text, "live.plan"))
    w = Walk(bound)
    w.run()
    held = {p.name for p in w.state.places["new_files"].holds}
    assert "new_files/cache" in held  # rsync --delete leaves excluded names alone
    assert "old_files (outside its named subpaths)" in held


# ---------------------------------------------------------------- the language


def test_live_is_a_flag_of_sync_only():
    _, f = check('  dump old_db to old:"/root/db.dump" live\n')
    e = [x for x in f if x.code == "E106"]
    assert len(e) == 1 and "`dump` has no option `live`" in e[0].message
    assert "`live` is a flag of `sync` and `replicate` only" in e[0].help
    _, f = check("  sync old_files to new_files live = true\n")
    assert any(x.code == "E106" and "`live` is a bare flag" in x.message for x in f)
    _, f = check("  sync old_files to new_files live live\n")
    assert any(x.code == "E106" and "given twice" in x.message for x in f)


def test_fixtures_exist_for_the_live_cases():
    names = {p.name for p in (FIXTURES / "H201").glob("*live*.plan")}
    assert {"good_live.plan", "bad_live_no_final.plan", "bad_live_unfinished.plan",
            "bad_live_final_while_running.plan"} <= names
