"""SshBackend against real sshd daemons (127.0.0.2, 127.0.0.3): commands, streams, timeouts, host keys, sudo."""

from __future__ import annotations

import hashlib
import os
import re
import pwd
import secrets
import shutil
import socket
import subprocess
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hosts import free_port

from mdsl.model import Host
from mdsl.run.backend import BackendError, CommandTimeout
from mdsl.run.ssh import SshBackend
from mdsl.syntax import ast as A

MiB = 1 << 20


def host_of(cluster, h, **kw) -> Host:
    """The bound `Host` a plan would give for test host `h`."""
    args = dict(name=h.name, user=h.user, address=h.address, port=h.port, identity=str(cluster.identity),
                known_hosts=str(cluster.known_hosts))
    args.update(kw)
    return Host(**args)


@pytest.fixture
def backends(ssh_hosts):
    made = []

    def make(h=None, **kw):
        opts = {k: kw.pop(k) for k in ("accept_new_host_keys", "connect_timeout", "command_timeout", "wrap_sudo")
                if k in kw}
        b = SshBackend(host_of(ssh_hosts, h or ssh_hosts.a, **kw), **opts)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def _fingerprint(public_key_line: str) -> str:
    """OpenSSH's own SHA256 fingerprint of a public key line."""
    r = subprocess.run(["ssh-keygen", "-lf", "/dev/stdin"], input=public_key_line + "\n", capture_output=True,
                       text=True, check=True)
    return r.stdout.split()[1]


def _cmdlines_containing(needle: bytes):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


# ---------------------------------------------------------------- commands


def test_run_exit_codes_stdout_stderr(ssh_hosts, backends):
    for h in ssh_hosts:
        b = backends(h)
        b.connect()
        r = b.run(f"cat {h.root}/.mdsl-host; echo 'to stderr' >&2; exit 3")
        assert (r.exit, r.stdout, r.stderr) == (3, f"{h.name} {h.address}\n", "to stderr\n")
        assert not r.ok
        assert b.run("true").ok
        # sh -c semantics whatever the login shell is, user values stay one word when quoted
        assert b.run("echo $0; printf '%s|' 'a b' \"c'd\"").stdout == "sh\na b|c'd|"
        assert b.run("printf 'caf\\303\\251 \\342\\230\\225'").stdout == "café ☕"
        assert b.run("exit 255").exit == 255
        # killed by a signal: sshd sends exit-signal, not exit-status (the wrapper exec'd the shell: $$ is it)
        killed = b.run("kill -9 $$"), b.run("kill -TERM $$")
        assert [(r.exit, r.signal) for r in killed] == [(137, "SIGKILL"), (143, "SIGTERM")]
        assert b.run("exit 137").signal is None


def test_stdin_binary_and_eof(backends):
    b = backends()
    data = bytes(range(256)) * 4096 + b"\x00end"  # 1 MiB + 4 bytes, NULs included
    r = b.run("sha256sum | cut -c1-64", stdin=data)
    assert r.stdout.strip() == hashlib.sha256(data).hexdigest()
    # no stdin: the command sees EOF at once instead of hanging
    assert b.run("cat; echo done", timeout=10).stdout == "done\n"
    assert b.run("wc -c", stdin=b"").stdout.strip() == "0"
    # a command that exits without reading all its input is not an error of the backend
    r = b.run("head -c 3", stdin=b"x" * (8 * MiB))
    assert (r.exit, r.stdout) == (0, "xxx")


def test_a_secret_file_is_private_and_gone_after_its_command(backends):
    from mdsl.compile.parts import Arg, Command, Lit, SecretText, sh
    from mdsl.run.executor import Executor
    from mdsl.run.secrets import SecretStore

    b = backends()
    show = 'stat -c "%a %U" "$PGPASSFILE"; cat "$PGPASSFILE"; echo "$PGPASSFILE"'
    cmd = Command(b.name, sh("sh -c", Arg(show)),
                  secret_files=[("PGPASSFILE", SecretText([Lit("*:*:*:*:s3cret\n")]))])
    r = Executor({b.name: b}, SecretStore({})).run(cmd)
    mode, content, path = r.stdout.splitlines()
    assert (mode, content) == ("600 root", "*:*:*:*:s3cret")
    assert b.run(f"test -e {path}").exit == 1


def test_commands_from_many_threads_share_one_connection(ssh_hosts, backends):
    b = backends()
    b.connect()
    with ThreadPoolExecutor(24) as pool:
        outs = list(pool.map(lambda i: b.run(f"sleep 0.2; echo {i}").stdout.strip(), range(60)))
    assert outs == [str(i) for i in range(60)]
    # one TCP connection served them all
    assert len(ssh_hosts.a.connection_pids()) <= 2  # privsep monitor + session


def test_reconnects_after_the_connection_drops(ssh_hosts, backends):
    b = backends()
    assert b.run("echo one").stdout == "one\n"
    started = threading.Event()
    errors = []

    def long_running():
        try:
            started.set()
            b.run("sleep 30")
        except BackendError as e:
            errors.append(e)

    t = threading.Thread(target=long_running)
    t.start()
    started.wait()
    time.sleep(0.5)
    ssh_hosts.a.kill_connections()
    t.join(20)
    assert not t.is_alive()
    assert errors and "connection lost" in errors[0].message and "sleep 30" in errors[0].message
    # the next command opens a new connection by itself
    assert b.run("echo two").stdout == "two\n"


def test_latency_per_command(ssh_hosts, backends, capsys):
    b = backends()
    b.connect()
    for _ in range(20):
        b.run("true")
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        b.run("true")
    per = (time.perf_counter() - t0) / n * 1000
    with capsys.disabled():
        print(f"\n[ssh backend] per-command latency (`true`, {n} runs, one connection): {per:.1f} ms")


# ---------------------------------------------------------------- streams


def _pattern(n_chunks: int, size: int = 256 * 1024):
    """Deterministic pseudo-random chunks, made lazily (the test must not hold the stream either)."""
    seed = hashlib.sha256(b"mdsl").digest()
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(size // 32))
    for i in range(n_chunks):
        yield block[i % 97:] + block[: i % 97]


def test_streams_50mb_both_ways_in_constant_memory(ssh_hosts, backends, capsys):
    b = backends()
    b.connect()
    n_chunks = 200  # 200 x 256 KiB = 50 MiB
    total = n_chunks * 256 * 1024
    want = hashlib.sha256()
    for c in _pattern(n_chunks):
        want.update(c)
    target = ssh_hosts.a.root / "stream.bin"

    # write: local generator -> remote file, hashed there
    r = b.write_stream(f"cat > {target} && sha256sum < {target} | cut -c1-64", _pattern(n_chunks))
    assert r.ok, r.stderr
    assert r.stdout.strip() == want.hexdigest()
    assert target.stat().st_size == total

    # read: remote file -> local sink, hashed here
    got = hashlib.sha256()
    sizes = []

    def sink(chunk):
        got.update(chunk)
        sizes.append(len(chunk))

    r = b.read_stream(f"cat {target}", sink)
    assert r.ok and r.stdout == ""
    assert got.hexdigest() == want.hexdigest() and sum(sizes) == total
    assert max(sizes) <= 256 * 1024

    # throughput of the backend alone (no disk, no hashing), printed, not asserted
    t0 = time.perf_counter()
    assert b.write_stream("cat > /dev/null", _pattern(n_chunks)).ok
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert b.read_stream(f"head -c {total} /dev/zero", lambda c: None).ok
    read_s = time.perf_counter() - t0

    # memory: both directions again under tracemalloc; the peak stays far below the 50 MiB moved
    tracemalloc.start()
    try:
        r1 = b.read_stream(f"cat {target}", lambda c: None)
        r2 = b.write_stream("cat > /dev/null", _pattern(n_chunks))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r1.ok and r2.ok
    assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB"
    with capsys.disabled():
        print(f"\n[ssh backend] 50 MiB write_stream {total / write_s / 1e6:.0f} MB/s, "
              f"read_stream {total / read_s / 1e6:.0f} MB/s, peak traced memory {peak / MiB:.1f} MiB")


def test_stream_producer_failure_kills_the_command(ssh_hosts, backends):
    b = backends()
    marker = f"mdsl-part-{secrets.token_hex(4)}"
    target = ssh_hosts.a.root / marker

    def broken():
        yield b"x" * 1024
        raise OSError("source disk failed")

    with pytest.raises(OSError, match="source disk failed"):
        b.write_stream(f"cat > {target}; echo finished > {target}.done", broken())
    time.sleep(0.5)
    assert not Path(f"{target}.done").exists()  # the command saw no clean EOF: it was killed


def test_sink_failure_kills_the_command(ssh_hosts, backends):
    b = backends()
    marker = f"mdsl-sink-{secrets.token_hex(4)}"

    def sink(chunk):
        raise RuntimeError("local disk full")

    with pytest.raises(RuntimeError, match="local disk full"):
        b.read_stream(f"while :; do echo {marker}; done", sink)
    deadline = time.monotonic() + 5
    while _cmdlines_containing(marker.encode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _cmdlines_containing(marker.encode())


# ---------------------------------------------------------------- timeouts


def test_timeout_stops_the_command_and_names_it(ssh_hosts, backends):
    b = backends()
    marker = f"mdsl-hang-{secrets.token_hex(4)}"
    t0 = time.perf_counter()
    with pytest.raises(CommandTimeout) as ei:
        b.run(f"sleep 60; echo {marker}", timeout=1)
    assert time.perf_counter() - t0 < 5
    assert f"sleep 60; echo {marker}" in ei.value.message and "1s" in ei.value.message
    assert ei.value.hint and "timeout" in ei.value.hint
    deadline = time.monotonic() + 5
    while _cmdlines_containing(marker.encode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _cmdlines_containing(marker.encode()), "the remote command outlived its timeout"
    # the connection is still good
    assert b.run("echo ok").stdout == "ok\n"
    # the backend's default timeout applies when the call gives none
    b2 = backends(command_timeout=0.5)
    with pytest.raises(CommandTimeout):
        b2.run("sleep 10")
    with pytest.raises(CommandTimeout):
        b2.read_stream("sleep 10", lambda c: None)
    with pytest.raises(CommandTimeout):
        b2.write_stream("sleep 10", iter([b"x"]))


# ---------------------------------------------------------------- connection errors


def test_connection_refused(ssh_hosts, backends):
    b = backends(port=free_port("127.0.0.2"))
    with pytest.raises(BackendError) as ei:
        b.connect()
    assert "connection refused" in ei.value.message and "127.0.0.2" in ei.value.message
    assert "sshd" in ei.value.hint


def test_dns_failure(backends):
    b = backends(address="no-such-host.invalid")
    with pytest.raises(BackendError) as ei:
        b.connect()
    assert "cannot resolve 'no-such-host.invalid'" in ei.value.message


def test_auth_failure_names_the_key(ssh_hosts, backends, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    b = backends(identity=str(other))
    with pytest.raises(BackendError) as ei:
        b.connect()
    fp = _fingerprint(Path(f"{other}.pub").read_text())
    assert "authentication failed for root@127.0.0.2" in ei.value.message
    assert str(other) in ei.value.message and fp in ei.value.message
    assert "authorized_keys" in ei.value.hint
    missing = backends(identity=str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="does not exist"):
        missing.connect()


def test_handshake_timeout(backends):
    # a TCP server that accepts and never says a word
    srv = socket.socket()
    srv.bind(("127.0.0.2", 0))
    srv.listen(1)
    try:
        b = backends(port=srv.getsockname()[1], connect_timeout=1.0)
        t0 = time.perf_counter()
        with pytest.raises(BackendError) as ei:
            b.connect()
        assert time.perf_counter() - t0 < 6
        assert "SSH" in ei.value.message
    finally:
        srv.close()


# ---------------------------------------------------------------- host keys


def test_unknown_host_key_is_refused_with_its_fingerprint(ssh_hosts, backends, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    a = ssh_hosts.a
    b = backends(known_hosts=str(kh))
    with pytest.raises(BackendError) as ei:
        b.connect()
    fp = _fingerprint(a.host_public_key)
    assert "unknown" in ei.value.message and fp in ei.value.message
    assert f"ssh-keyscan -p {a.port} 127.0.0.2 >> {kh}" in ei.value.hint
    assert "--accept-new-host-keys" in ei.value.hint
    assert kh.read_text() == ""
    # a known_hosts file that does not exist at all is the same: nothing is trusted
    with pytest.raises(BackendError, match="unknown"):
        backends(known_hosts=str(tmp_path / "absent")).connect()
    assert not (tmp_path / "absent").exists()


def test_accept_new_host_keys_records_the_key(ssh_hosts, backends, tmp_path):
    kh = tmp_path / "sub" / "known_hosts"
    a = ssh_hosts.a
    b = backends(known_hosts=str(kh), accept_new_host_keys=True)
    assert b.run("echo ok").stdout == "ok\n"
    assert b.host_key_added == _fingerprint(a.host_public_key)
    assert kh.read_text() == a.known_hosts_line + "\n"
    # OpenSSH itself accepts the line we wrote, with strict checking
    r = subprocess.run(["ssh", "-F", str(ssh_hosts.ssh_config), "-o", f"UserKnownHostsFile={kh}",
                        "-o", "StrictHostKeyChecking=yes", a.address, "echo ok"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    # and a later run without the flag trusts it
    assert backends(known_hosts=str(kh)).run("echo again").stdout == "again\n"
    assert kh.read_text().count("\n") == 1


def test_changed_host_key_is_refused_even_with_accept_new(ssh_hosts, backends, tmp_path):
    a, other = ssh_hosts.a, ssh_hosts.b
    kh = tmp_path / "known_hosts"
    forged = a.known_hosts_line.replace(a.host_public_key.split()[1], other.host_public_key.split()[1])
    kh.write_text(forged + "\n")
    for accept in (False, True):
        b = backends(known_hosts=str(kh), accept_new_host_keys=accept)
        with pytest.raises(BackendError) as ei:
            b.connect()
        msg = ei.value.message
        assert "HOST KEY CHANGED" in msg
        assert _fingerprint(a.host_public_key) in msg and _fingerprint(other.host_public_key) in msg
        assert "ssh-keygen -R" in ei.value.hint
    assert kh.read_text() == forged + "\n"
    # the help's command removes exactly that entry (on a port other than 22 it is `[address]:port`)
    suggested = re.search(r"`(ssh-keygen -R [^`]*)`", ei.value.hint).group(1)
    assert f"'[{a.address}]:{a.port}'" in suggested
    subprocess.run(suggested, shell=True, check=True, capture_output=True)
    assert kh.read_text() == ""


# ---------------------------------------------------------------- sudo

SUDO_USER = "mdsl-e2e-sudo"


@pytest.fixture
def sudo_user(e2e_base, monkeypatch):
    """A login user with a password and full sudo rights (its password in MDSL_E2E_SUDO_PASSWORD)."""
    if shutil.which("sudo") is None:
        pytest.fail("the sudo tests need sudo (`apt-get install -y sudo`; .ci/run installs it)")
    password = "pw " + secrets.token_urlsafe(12)  # a space: it must survive as one stdin line
    home = e2e_base / "home" / SUDO_USER
    sudoers = Path(f"/etc/sudoers.d/{SUDO_USER}")
    subprocess.run(["userdel", "-r", SUDO_USER], capture_output=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    home.parent.chmod(0o755)
    subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", SUDO_USER], check=True)
    subprocess.run(["chpasswd"], input=f"{SUDO_USER}:{password}", text=True, check=True)
    sudoers.write_text(f"{SUDO_USER} ALL=(ALL:ALL) ALL\n")
    sudoers.chmod(0o440)
    monkeypatch.setenv("MDSL_E2E_SUDO_PASSWORD", password)
    try:
        yield password
    finally:
        sudoers.unlink(missing_ok=True)
        try:
            _kill_processes_of(pwd.getpwnam(SUDO_USER).pw_uid)
        except KeyError:
            pass
        subprocess.run(["userdel", "-r", SUDO_USER], capture_output=True)


def _kill_processes_of(uid: int) -> None:
    """SIGKILL what the test user still runs (its ssh sessions), so userdel can remove it."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        except (OSError, StopIteration):
            continue
        if str(uid) in uids[:1]:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass


def _sudo_backend(backends, **kw):
    return backends(user=SUDO_USER, sudo=True, sudo_password=A.Secret("env", "MDSL_E2E_SUDO_PASSWORD"),
                    wrap_sudo=True, **kw)


def test_sudo_runs_as_root_and_the_password_stays_off_argv(ssh_hosts, backends, sudo_user):
    b = _sudo_backend(backends)
    assert b.run("id -un").stdout == "root\n"
    r = b.run("id -un; echo oops >&2; exit 4")
    assert (r.exit, r.stdout, r.stderr) == (4, "root\n", "oops\n")
    # the command's stdin is exactly what we sent: the password went to sudo's prompt only
    assert b.run("cat", stdin=b"payload\x00\n").stdout == "payload\x00\n"
    # nothing of the password in any process's argv or environment while sudo'd commands run
    needle = sudo_user.encode()
    seen_running = []
    stop = threading.Event()

    def scan():
        while not stop.is_set():
            assert not _cmdlines_containing(needle), "password in a process's argv"
            for pid in _cmdlines_containing(b"mdsl-sudo-argv-probe"):
                seen_running.append(pid)
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        assert needle not in f.read(), "password in a process's environment"
                except OSError:
                    pass
            time.sleep(0.01)

    scanner = threading.Thread(target=scan)
    scanner.start()
    try:
        for _ in range(3):
            assert b.run("sleep 0.4 # mdsl-sudo-argv-probe").ok
    finally:
        stop.set()
        scanner.join()
    assert seen_running, "the probe never saw the sudo'd command running"
    # nor in sshd's log
    log = (ssh_hosts.a.confdir / "sshd.log").read_text(errors="replace")
    assert sudo_user not in log
    # and it streams through sudo in both directions
    data = os.urandom(3 * MiB)
    r = b.write_stream("sha256sum | cut -c1-64", iter([data[:MiB], data[MiB:]]))
    assert r.stdout.strip() == hashlib.sha256(data).hexdigest()
    got = []
    b.read_stream("head -c 2000000 /dev/zero", got.append)
    assert sum(map(len, got)) == 2_000_000


def test_sudo_timeout_kills_the_root_command(backends, sudo_user):
    b = _sudo_backend(backends)
    marker = f"mdsl-sudo-hang-{secrets.token_hex(4)}"
    with pytest.raises(CommandTimeout):
        b.run(f"sleep 60; echo {marker}", timeout=1)
    deadline = time.monotonic() + 6
    while _cmdlines_containing(marker.encode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _cmdlines_containing(marker.encode())


def test_sudo_wrong_password_and_nopasswd(backends, sudo_user, monkeypatch):
    monkeypatch.setenv("MDSL_E2E_WRONG", "not-the-password")
    b = backends(user=SUDO_USER, sudo=True, sudo_password=A.Secret("env", "MDSL_E2E_WRONG"), wrap_sudo=True)
    with pytest.raises(BackendError) as ei:
        b.run("id")
    assert 'env("MDSL_E2E_WRONG")' in ei.value.message and "not-the-password" not in str(ei.value)
    # no password declared: sudo -n fails at once instead of waiting
    n = backends(user=SUDO_USER, sudo=True, wrap_sudo=True)
    with pytest.raises(BackendError, match="password is required"):
        n.run("id")
    # with NOPASSWD, sudo never prompts: the declared password must not leak into the command's stdin
    Path(f"/etc/sudoers.d/{SUDO_USER}").write_text(f"{SUDO_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    b = _sudo_backend(backends)
    assert b.run("cat", stdin=b"only this").stdout == "only this"
    # a compiled command that feeds sudo itself is refused rather than nested
    with pytest.raises(BackendError, match="wraps every command in sudo"):
        b.run("sudo -S -p '' -- sh -c id", stdin=b"pw\n")


def test_compiled_sudo_commands_pass_through_unwrapped(backends, sudo_user):
    """The default (wrap_sudo=False): a compiled `sudo -S` command gets its password line on stdin."""
    from mdsl.compile.parts import Command, Lit

    b = backends(user=SUDO_USER, sudo=True, sudo_password=A.Secret("env", "MDSL_E2E_SUDO_PASSWORD"))
    cmd = Command("a", (Lit("id -un"),), sudo=True, sudo_password=A.Secret("env", "MDSL_E2E_SUDO_PASSWORD"))
    stdin = cmd.stdin_text().reveal(lambda s: os.environ[s.arg])
    r = b.run(cmd.render(masked=False), stdin=stdin)
    assert (r.exit, r.stdout) == (0, "root\n"), r.stderr
    assert sudo_user not in cmd.render(masked=False)


def test_stderr_arriving_with_the_start_marker_is_kept(backends):
    b = backends()
    for _ in range(30):  # the command's first bytes often share a packet with the wrapper's marker
        r = b.run("/nonexistent/program")
        assert r.exit == 127 and "/nonexistent/program" in r.stderr and "not found" in r.stderr, r
