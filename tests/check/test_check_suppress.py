"""`# mdsl: allow CODE "reason"` silences one code on one step; bad allows are E107."""

from __future__ import annotations

from mdsl.check.rules.examples import DBS, FILES, HOSTS, MOVE, SERVICES, plan
from check_helpers import findings_of

UNOWNED = (HOSTS + "\n" + DBS + "\n" + FILES + "\n" + SERVICES).replace(
    'dir new_files on new { path = "/srv/app/files"  owner = "app:app" }',
    'dir new_files on new { path = "/srv/app/files" }')


def _codes(text):
    return sorted((f.code, f.span.line) for f in findings_of(text))


def _line_of(text, needle):
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


def test_unsuppressed_baseline():
    text = plan(MOVE, UNOWNED)
    assert _codes(text) == [("H302", _line_of(text, "extract"))]


def test_allow_on_the_line_above_silences():
    text = plan(MOVE.replace("  extract", '  # mdsl: allow H302 "chowned by the image"\n  extract'), UNOWNED)
    assert _codes(text) == []


def test_allow_trailing_the_step_silences():
    text = plan(MOVE.replace("into new_files\n", 'into new_files  # mdsl: allow H302 "chowned by the image"\n'),
                UNOWNED)
    assert _codes(text) == []


def test_allow_covers_only_its_step():
    steps = MOVE.replace("  start new_app\n", '  extract new:"/root/files.tar.gz" into new_files\n  start new_app\n')
    text = plan(steps.replace("  extract", '  # mdsl: allow H302 "chowned by the image"\n  extract', 1), UNOWNED)
    second = [i for i, line in enumerate(text.split("\n"), 1) if "extract" in line][-1]
    assert _codes(text) == [("H302", second)]


def test_allow_above_a_parallel_block_covers_its_members():
    steps = MOVE.replace("  extract new:\"/root/files.tar.gz\" into new_files\n",
                         '  # mdsl: allow H302 "chowned by the image"\n'
                         '  parallel {\n    extract new:"/root/files.tar.gz" into new_files\n  }\n')
    assert _codes(plan(steps, UNOWNED)) == []


def test_allow_without_reason_is_e107_and_does_not_silence():
    text = plan(MOVE.replace("  extract", "  # mdsl: allow H302\n  extract"), UNOWNED)
    assert _codes(text) == [("E107", _line_of(text, "allow")), ("H302", _line_of(text, "extract"))]


def test_allow_for_a_code_that_does_not_fire_is_e107():
    text = plan(MOVE.replace("  extract", '  # mdsl: allow H101 "nothing is deleted here"\n  extract'), UNOWNED)
    assert _codes(text) == [("E107", _line_of(text, "allow")), ("H302", _line_of(text, "extract"))]


def test_allow_of_an_unknown_code_is_e107():
    text = plan(MOVE.replace("  extract", '  # mdsl: allow H999 "typo"\n  extract'))
    found = findings_of(text)
    assert [(f.code, "H999" in f.message) for f in found] == [("E107", True)]


def test_e_codes_cannot_be_allowed():
    text = plan(MOVE.replace("  stop old_app\n", '  # mdsl: allow E102 "renamed later"\n  stop old_ap\n'))
    assert _codes(text) == [("E102", _line_of(text, "stop old_ap")), ("E107", _line_of(text, "allow"))]


def test_malformed_comment_is_e107():
    text = plan(MOVE.replace("  extract", '  # mdsl: alow H302 "typo"\n  extract'))
    assert _codes(text) == [("E107", _line_of(text, "alow"))]


def test_allow_not_next_to_a_step_is_e107():
    text = plan(MOVE.replace("  extract", '  # mdsl: allow H302 "x"\n\n  extract'), UNOWNED)
    assert _codes(text) == [("E107", _line_of(text, "allow")), ("H302", _line_of(text, "extract"))]


def test_allow_on_a_declaration_silences_its_findings():
    decls = (HOSTS + "\n" + DBS + "\n" + FILES + "\n" + SERVICES).replace(
        'postgres old_db on old { database = "app"  password = env("APP_DB_PASSWORD") }',
        '# mdsl: allow H304 "a throwaway test database"\n'
        'postgres old_db on old { database = "app"  password = "test" }')
    assert _codes(plan(MOVE, decls)) == []


def test_stale_allow_is_not_judged_when_the_walk_did_not_run():
    # An E102 stops the checker before the walk: whether H302 fires there is unknown.
    text = plan(MOVE.replace("  stop old_app\n", "  stop old_ap\n").replace(
        "  extract", '  # mdsl: allow H302 "chowned by the image"\n  extract'))
    assert [c for c, _ in _codes(text)] == ["E102"]


def test_one_allow_silences_every_finding_of_its_code_on_the_step():
    steps = MOVE.replace("  stop old_app\n", "").replace(
        "  start new_app\n", "  stop old_app\n  start new_app\n").replace(
        "  dump old_db", '  # mdsl: allow H201 "read-only maintenance mode is on"\n  dump old_db')
    codes = _codes(plan(steps))
    assert [c for c, _ in codes] == ["H201"]  # the archive's H201 stays: the allow is on the dump


def test_allow_beside_an_attribute_silences_its_finding():
    decls = (HOSTS + "\n" + DBS + "\n" + FILES + "\n" + SERVICES).replace(
        'postgres old_db on old { database = "app"  password = env("APP_DB_PASSWORD") }',
        'postgres old_db on old {\n  database = "app"\n'
        '  password = "test"  # mdsl: allow H304 "a throwaway test database"\n}')
    assert _codes(plan(MOVE, decls)) == []
