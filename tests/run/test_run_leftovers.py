"""What an interrupted apply left on a host: the journal's records of command pids and 0600 temp
files, and the next run's clean-up, on the local backend with real processes.

A recorded pid is stopped only while its leader's /proc/PID/cmdline shows the recorded run's
marker: a process without the marker (a pid the host reused) or with another run's marker
survives. `--dry-run` reports and stops nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from run_helpers import apply
from mdsl.model import Host
from mdsl.run import journal as J
from mdsl.run.backend import run_marker
from mdsl.run.leftovers import SECRET_PATH_RE, remove_commands, stop_command
from mdsl.run.local import LocalBackend

TOKEN, OTHER = "0123456789abcdef", "fedcba9876543210"


def _spawn(script: str) -> subprocess.Popen:
    """`bash -c SCRIPT` in its own session, as the local backend starts a command."""
    return subprocess.Popen(["/bin/bash", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _alive(p: subprocess.Popen) -> bool:
    return p.poll() is None


def _wait_cmdline(p: subprocess.Popen, needle: str) -> None:
    for _ in range(500):
        try:
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"pid {p.pid} never showed {needle!r}")


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _plan_with_records(tmp_path, records, files=()):
    """A local plan whose journal says an interrupted run left these pids (and temp files) on host a."""
    plan = tmp_path / "p.plan"
    plan.write_text(f'host a {{ local = true }}\nsteps {{\n  run a "touch {tmp_path}/ran"\n}}\n')
    j = J.Journal(J.journal_path(str(plan)))
    j.started_run(str(plan))
    j.step_started("1", "fp")
    for pid, token in records:
        j.command_started("1", "a", pid, None, token, f"sleep 300 # pid {pid}")
    for path in files:
        j.secret_file_created("1", "a", path, None, False)
    j.close()
    return plan


def test_only_a_recorded_pid_showing_its_runs_marker_is_stopped(tmp_path, procs):
    plain = _spawn("sleep 300")  # no marker at all: a pid the host gave to someone else
    other = _spawn(f"# {run_marker(OTHER)}\ntrap : EXIT\nsleep 300")  # another run's command
    ours = _spawn(f"# {run_marker(TOKEN)}\ntrap : EXIT\nsleep 300")  # the command the killed run left
    procs += [plain, other, ours]
    _wait_cmdline(other, OTHER)
    _wait_cmdline(ours, TOKEN)
    plan = _plan_with_records(tmp_path, [(plain.pid, TOKEN), (other.pid, TOKEN), (ours.pid, TOKEN)])

    code, out, err = apply(plan, dry_run=True)
    assert code == 0, err
    assert f"would stop `sleep 300 # pid {ours.pid}` (pid {ours.pid} on host a)" in out, out
    assert out.count("would stop") == 1
    assert _alive(plain) and _alive(other) and _alive(ours)  # a dry run stops nothing

    code, out, err = apply(plan)
    assert code == 0, err
    assert (f"stopped `sleep 300 # pid {ours.pid}` (pid {ours.pid} on host a), left running by the interrupted run"
            in out), out
    assert out.count("stopped `") == 1
    assert ours.wait(10) != 0  # TERM, from the clean-up
    assert _alive(plain) and _alive(other)
    assert (tmp_path / "ran").exists()
    st = J.read_journal(J.journal_path(str(plan)))
    assert st.running == []  # checked once: forgotten
    reaped = [json.loads(x) for x in open(J.journal_path(str(plan))) if '"reaped"' in x]
    assert reaped[0]["stopped"] == [ours.pid]


def test_a_group_that_ignores_term_is_killed(tmp_path, procs):
    stubborn = _spawn(f"# {run_marker(TOKEN)}\ntrap '' TERM\ntrap : EXIT\nsleep 300 & wait; sleep 300")
    procs.append(stubborn)
    _wait_cmdline(stubborn, TOKEN)
    plan = _plan_with_records(tmp_path, [(stubborn.pid, TOKEN)])
    code, out, err = apply(plan)
    assert code == 0, err
    assert stubborn.wait(10) == -signal.SIGKILL
    assert "stopped `" in out


def _group_members(pgid: int) -> list:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            fields = stat.rsplit(") ", 1)[1].split()
            if fields[2] == str(pgid) and fields[0] not in "ZX":
                out.append(int(d))
    return out


def _orphaned_group(env_line: str) -> subprocess.Popen:
    """A command whose shell has ended while what it started goes on in its process group."""
    leader = _spawn(f"# {run_marker(TOKEN)}\n{env_line}\nsleep 300 & exit 0")
    leader.wait(10)  # reaped: the leader's pid is gone, the group lives on in its sleep
    for _ in range(500):
        if _group_members(leader.pid):
            return leader
        time.sleep(0.01)
    raise AssertionError("the background sleep never showed up")


def test_what_a_command_left_after_its_shell_ended_is_stopped_by_its_environment(tmp_path):
    from mdsl.run.backend import RUN_ENV

    ours = _orphaned_group(f"{RUN_ENV}={TOKEN}; export {RUN_ENV}")  # as marker_line sets it
    theirs = _orphaned_group(f"{RUN_ENV}={OTHER}; export {RUN_ENV}")  # another run's leftovers
    bare = _orphaned_group("unset MDSL_RUN")  # a group without the token: never proven ours
    groups = [ours, theirs, bare]
    try:
        members = {g.pid: _group_members(g.pid) for g in groups}
        plan = _plan_with_records(tmp_path, [(g.pid, TOKEN) for g in groups])
        code, out, err = apply(plan, dry_run=True)
        assert code == 0, err
        assert out.count("would stop") == 1 and f"(pid {ours.pid} on host a)" in out, out
        code, out, err = apply(plan)
        assert code == 0, err
        assert out.count("stopped `") == 1 and f"(pid {ours.pid} on host a)" in out, out
        for _ in range(500):
            if not _group_members(ours.pid):
                break
            time.sleep(0.01)
        assert _group_members(ours.pid) == []
        assert _group_members(theirs.pid) == members[theirs.pid]
        assert _group_members(bare.pid) == members[bare.pid]
    finally:
        for g in groups:
            try:
                os.killpg(g.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_marker_line_puts_the_token_in_the_childrens_environment(tmp_path):
    b = LocalBackend(Host("here", local=True), cwd=str(tmp_path))
    res = b.run("sh -c 'tr \"\\0\" \"\\n\" < /proc/$$/environ'")
    assert f"MDSL_RUN={b.token}" in res.stdout.splitlines()


def test_the_backends_mark_their_commands_and_report_the_pid(tmp_path):
    b = LocalBackend(Host("here", local=True), cwd=str(tmp_path))
    seen = []
    b.on_started = lambda cmd, pid, inner: seen.append((cmd, pid))
    # One external command: bash would exec() it in the shell's place, and the marker would be gone.
    res = b.run("cat /proc/$$/cmdline")
    assert run_marker(b.token) in res.stdout.replace("\0", " ")  # the EXIT trap kept the marked shell
    assert [cmd for cmd, _ in seen] == ["cat /proc/$$/cmdline"]
    res = b.run("echo $$")
    assert seen[-1] == ("echo $$", int(res.stdout))
    assert LocalBackend(Host("x", local=True)).token != b.token


def test_a_local_command_killed_by_a_signal_reports_it(tmp_path):
    b = LocalBackend(Host("here", local=True), cwd=str(tmp_path))
    res = b.run("kill -KILL $$")
    assert (res.exit, res.signal) == (137, "SIGKILL")
    assert b.run("exit 137").signal is None


def test_the_journal_keeps_pids_until_their_step_is_done_or_checked_and_across_a_reset(tmp_path):
    path = str(tmp_path / "p.journal")
    j = J.Journal(path)
    j.command_started("1", "a", 100, None, TOKEN, "one")
    j.command_started("2", "a", 200, 201, TOKEN, "two")
    j.command_started("3", "b", 300, None, TOKEN, "three")
    j.step_done("1", "fp", 1, [])  # its commands ended in this run
    j.secret_file_created("2", "a", "/tmp/mdsl-secret.AbCdEf12", "postgres", False)
    j.secret_file_created("2", "a", "/tmp/mdsl-secret.ZzZzZz99", None, True)
    j.secret_file_removed("a", "/tmp/mdsl-secret.ZzZzZz99")
    j.reset()  # --restart: the steps are forgotten, what is on the hosts is not
    j.close()
    st = J.read_journal(path)
    assert st.steps == {}
    assert [(r.step, r.pid, r.pids) for r in st.running] == [("2", 200, [200, 201]), ("3", 300, [300])]
    assert list(st.secret_files.values()) == [J.SecretFileRecord("a", "/tmp/mdsl-secret.AbCdEf12", "postgres")]
    later = J.Journal(path)  # the next run checks host b only, and finishes step 2
    later.commands_checked("b", [r for r in st.running if r.host == "b"], [300])
    later.step_done("2", "fp", 1, [])  # another run: step 2's old record stays
    later.close()
    assert [r.pid for r in J.read_journal(path).running] == [200]


def test_hand_edited_records_are_ignored(tmp_path):
    path = tmp_path / "p.journal"
    bad = [{"event": "pid", "step": "1", "host": "a", "pid": "1; rm -rf /", "token": TOKEN},
           {"event": "pid", "step": "1", "host": "a", "pid": 1, "token": TOKEN},  # init
           {"event": "pid", "step": "1", "host": "a", "pid": 50, "token": "$(reboot)"},
           {"event": "pid", "step": "1", "host": "a", "pid": True, "token": TOKEN},
           [1, 2]]
    path.write_text("".join(json.dumps(b) + "\n" for b in bad))
    st = J.read_journal(str(path))
    assert st.running == [] and st.torn_lines == 1


def test_only_mktemp_shaped_paths_are_removed_each_one_quoted():
    files = [J.SecretFileRecord("a", p) for p in (
        "/tmp/mdsl-secret.AbCdEf12", "/srv/it's here/mdsl-secret.0123abcd",
        "/etc/passwd", "/tmp/mdsl-secret.short", "relative/mdsl-secret.AbCdEf12", "/tmp/mdsl-secret.AbCdEf12\n/x")]
    assert [f for f in files if SECRET_PATH_RE.fullmatch(f.path)] == files[0:2]
    (cmd, paths), = remove_commands("a", files)
    assert paths == ["/tmp/mdsl-secret.AbCdEf12", "/srv/it's here/mdsl-secret.0123abcd"]
    assert cmd.render(masked=False) == "rm -f -- /tmp/mdsl-secret.AbCdEf12 '/srv/it'\"'\"'s here/mdsl-secret.0123abcd'"
    as_pg, = remove_commands("a", [J.SecretFileRecord("a", "/tmp/mdsl-secret.AbCdEf12", "postgres")])
    assert as_pg[0].run_as == "postgres"


def test_the_stop_script_quotes_its_words():
    r = J.RunningCommand("1", "a", 123, 456, TOKEN, "x", "run")
    text = stop_command("a", [r], dry_run=False).render(masked=False)
    assert f"123:{TOKEN} 456:{TOKEN}" in text
    assert "mdsl-stop" in text and "kill -KILL" in text
