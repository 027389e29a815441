"""The walk over lanes (`sequence { }` inside `parallel { }`): in order inside a lane, unordered
between lanes and the block's other members, whose effects a lane never sees early."""

from __future__ import annotations

from mdsl.findings import Severity
from check_helpers import FIXTURES, findings_of

HEAD = (FIXTURES / "H201" / "good_lanes.plan").read_text(encoding="utf-8").split("\nsteps {")[0]

LANE = """    sequence {{
      stop old_app{i}
      dump old_db{i} to old{i}:"/root/app.db"
      transfer old{i}:"/root/app.db" to new{i}:"/root/app.db"
      restore new{i}:"/root/app.db" into new_db{i} replace
      sync old_files{i} to new_files{i}
      start new_app{i}
      verify run new{i} "systemctl is-active app"
    }}
"""


def check(steps: str):
    """(code, line) of every warning and error, and the findings; lines count from `steps {`."""
    text = HEAD + "\nsteps {\n" + steps + "}\n"
    offset = HEAD.count("\n") + 2  # so the first line inside `steps { }` is line 1
    found = [f for f in findings_of(text) if f.severity >= Severity.WARNING]
    return sorted((f.code, f.span.line - offset) for f in found), found


def block(*members: str) -> str:
    return "  parallel {\n" + "".join(members) + "  }\n"


def test_one_lane_per_app_is_clean():
    assert check(block(LANE.format(i=1), LANE.format(i=2)))[0] == []


def test_inside_a_lane_the_order_counts():
    # the copies before the stop, in the same lane: torn
    lane = LANE.format(i=1).replace("      stop old_app1\n", "").replace(
        "      sync old_files1 to new_files1\n", "      sync old_files1 to new_files1\n      stop old_app1\n")
    codes, _ = check(block(lane, LANE.format(i=2)))
    assert codes == [("H201", 3), ("H201", 6)]


def test_a_start_before_the_data_in_its_lane_is_h205():
    lane = LANE.format(i=1).replace("      start new_app1\n", "").replace(
        "      stop old_app1\n", "      stop old_app1\n      start new_app1\n")
    codes, _ = check(block(lane))
    assert ("H205", 4) in codes


def test_a_stop_in_another_lane_does_not_protect_a_copy():
    codes, found = check(block(
        "    sequence {\n      stop old_app1\n    }\n",
        "    sequence {\n      sync old_files1 to new_files1\n      start new_app1\n    }\n"))
    assert ("H201", 6) in codes
    assert any("may be writing" in f.message for f in found if f.code == "H201")


def test_a_stop_in_a_plain_member_does_not_protect_a_lane():
    codes, _ = check(block("    stop old_app1\n", "    sequence {\n      sync old_files1 to new_files1\n    }\n")
                     + "  start new_app1\n")
    assert codes == [("H201", 4)]


def test_a_start_in_another_lane_races_with_the_data():
    codes, found = check("  stop old_app1\n" + block(
        "    sequence {\n      start new_app1\n    }\n",
        "    sequence {\n      sync old_files1 to new_files1\n    }\n"))
    assert codes and {c for c, _ in codes} <= {"H202", "H205"}


def test_lanes_that_touch_the_same_data_conflict_at_the_inner_step():
    codes, found = check(block(LANE.format(i=1), LANE.format(i=2).replace("new_files2", "new_files1")))
    # the second lane's sync, not its `sequence` (line 11); and new_app1 may start before that sync (H205)
    assert codes == [("H204", 16), ("H205", 8)]
    (h204,) = [f for f in found if f.code == "H204"]
    assert "`sync` (line" in h204.message and "one `sequence`" in h204.help


def test_a_lane_and_a_plain_member_conflict():
    codes, _ = check(block(LANE.format(i=1), "    start new_app1\n"))
    assert ("H204", 11) in codes


def test_the_lanes_effects_hold_after_the_block():
    # after the block old_app1 is stopped (a copy of its data is whole) and new_app1 runs (one of its is torn)
    codes, _ = check(block(LANE.format(i=1)) + '  archive old_files1 to old1:"/root/after.tar"\n'
                     + '  dump new_db1 to new1:"/root/again.db"\n')
    assert codes == [("H201", 13)]


def _delete_after(steps: str):
    return check(steps + '  delete old1:"/var/lib/app/files"\n')[0]


def test_a_verify_in_the_lane_vouches_for_its_own_copy():
    assert not [c for c in _delete_after(block(LANE.format(i=1), LANE.format(i=2))) if c[0] == "H103"]


def test_a_verify_in_another_lane_does_not():
    lane1 = LANE.format(i=1).replace('      verify run new1 "systemctl is-active app"\n', "")
    lane2 = LANE.format(i=2).replace('verify run new2', 'verify run new1')
    assert [c for c in _delete_after(block(lane1, lane2)) if c[0] == "H103"]


def test_a_verify_before_the_copy_in_its_lane_does_not():
    lane1 = LANE.format(i=1).replace('      verify run new1 "systemctl is-active app"\n', "").replace(
        "      stop old_app1\n", '      stop old_app1\n      verify run new1 "true"\n')
    assert [c for c in _delete_after(block(lane1)) if c[0] == "H103"]


def test_a_verify_after_the_block_vouches_for_every_lane():
    lane1 = LANE.format(i=1).replace('      verify run new1 "systemctl is-active app"\n', "")
    assert not [c for c in _delete_after(block(lane1) + '  verify run new1 "true"\n') if c[0] == "H103"]


NESTED = """    sequence {{
      stop old_app{i}
      parallel {{
        sequence {{
          dump old_db{i} to old{i}:"/root/app.db"
          transfer old{i}:"/root/app.db" to new{i}:"/root/app.db"
          restore new{i}:"/root/app.db" into new_db{i} replace
        }}
        sync old_files{i} to new_files{i}
      }}
      start new_app{i}
      verify run new{i} "systemctl is-active app"
    }}
"""


def test_a_block_inside_a_lane_runs_after_the_steps_before_it_and_before_those_after():
    # the start after the inner block (and its inner lane) comes after every arrival: no H205, no H202
    assert check(block(NESTED.format(i=1), NESTED.format(i=2)) + '  delete old1:"/var/lib/app/files"\n')[0] == []


def test_inside_the_inner_block_its_members_are_unordered():
    lane = NESTED.format(i=1).replace("      stop old_app1\n", "").replace(
        "        sync old_files1 to new_files1\n", "        sync old_files1 to new_files1\n        stop old_app1\n")
    codes, _ = check(block(lane))
    assert codes == [("H201", 5), ("H201", 9)]  # the dump and the sync may run before the stop


def test_a_start_inside_the_inner_block_races_with_its_copies():
    lane = NESTED.format(i=1).replace("      start new_app1\n", "").replace(
        "        sync old_files1 to new_files1\n", "        sync old_files1 to new_files1\n        start new_app1\n")
    codes, _ = check(block(lane))
    # the restore (in the inner lane) and the sync write while new_app1 may run; it may start before them
    assert codes == [("H202", 8), ("H202", 10), ("H205", 11)]
