"""Files and directories: tar archives, extraction, rsync, transfers, move, delete.

GNU tar unquotes backslash escapes in names given on its command line, even
`-C DIR` (`a\\b` would become `a<backspace>`): every tar here runs with
`--no-unquote`, so a quoted path reaches the file system as written.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import List, Optional, Tuple

from mdsl.model import Dir, File, Host
from mdsl.compile.actions import CopyArtifact, Destination, Location, Shell
from mdsl.compile.context import (
    DEFAULT_TIMEOUT, ArtifactFormat, CompileContext, normalize, option_value, parent, step_timeout,
)
from mdsl.compile.parts import Arg, CompileError, Lit, sh
from mdsl.compile.docker import dir_root, is_volume, remote_in_volume, remote_rsync_path
from mdsl.compile.routes import TARGET_ALIAS, Route, needs_route, route_ssh, rsync_rsh
from mdsl.syntax import ast as A

_COMPRESS_BY_SUFFIX = ((".tar.zst", "zstd"), (".tzst", "zstd"), (".tar.gz", "gzip"), (".tgz", "gzip"),
                       (".tar", "none"))


def archive_compression(step: A.Archive, path: str) -> str:
    """`compress = ...`, else what the file name says (`.tar.gz` stays gzip), else zstd.

    zstd (`-T0`, level 3, every core) when nothing says otherwise: it packs
    mixed text and media to about gzip's size in a fraction of gzip's time
    (bench/files.py; the figures are in docs/performance.md, "Files").
    """
    c = option_value(step, "compress")
    if c:
        return c
    for suffix, comp in _COMPRESS_BY_SUFFIX:
        if path.endswith(suffix):
            return comp
    return "zstd"


def _tar_compress_flags(comp: str, extract: bool) -> List[Lit]:
    if comp == "gzip":
        return [Lit("-z")]
    if comp == "zstd":
        return [Lit("--use-compress-program=" + shlex.quote("zstd -d" if extract else "zstd -T0 -q"))]
    return []


def _excludes_for_tar(subs) -> List:
    # Exact, anchored member names: `./cache` excludes the top-level cache dir only; no wildcards.
    if not subs:
        return []
    return [Lit("--anchored --no-wildcards")] + [Arg(posixpath.normpath(s), "--exclude=./") for s in subs]


def archive(ctx: CompileContext, step: A.Archive, d: Dir, host: str, path: str):
    """`archive DIR to LOC`: tar of the dir's content into `PATH.part`, then rename."""
    if d.host != host:
        raise CompileError(f"`archive` of {d.name} writes on its own host `{d.host}`, not `{host}`", step.span,
                           help="archive where the dir is, then `transfer`")
    comp = archive_compression(step, path)
    part = path + ".part"
    tools = ["tar", "mkdir", "mv", "rm"] + (["gzip"] if comp == "gzip" else ["zstd"] if comp == "zstd" else [])
    tools += ["docker"] if is_volume(d) else []
    find, root = dir_root(ctx, d, "mdsl_dir")
    cmd = ctx.command(host, sh(
        "umask 077 && mkdir -p --", Arg(parent(path)), "&& rm -f --", Arg(part), "&&", *find,
        "tar --no-unquote", *_numeric(d), "-C", root, *_excludes_for_tar(option_value(step, "exclude", ())),
        *_tar_compress_flags(comp, False), "-cf", Arg(part), ". &&",
        "mv -f -T --", Arg(part), Arg(path),
    ), tools=tools)
    ctx.remember(host, path, ArtifactFormat("tar", compress=comp))
    return ([Shell(cmd, f"archive {d.name} ({comp})", step_timeout(step, DEFAULT_TIMEOUT),
                   watch=Location(host, part))],
            [Destination(host, path, None, d.name)])


def _numeric(d: Dir):
    # A volume's files belong to the image's numeric users (999 for postgres), never to the host's names.
    return (Lit("--numeric-owner"),) if is_volume(d) else ()


def _empty(root):
    # Everything inside the dir, not the dir itself (its mode and ownership stay).
    return sh("find", root, "-mindepth 1 -maxdepth 1 -exec rm -rf -- '{}' + &&")


def _own(d: Dir, root):
    out = ()
    if d.owner:
        out += sh("&& chown -R --", Arg(d.owner), root)
    if d.mode:
        out += sh("&& chmod --", Arg(d.mode), root)
    return out


def extract(ctx: CompileContext, step: A.Extract, d: Dir, host: str, path: str):
    """`extract LOC into DIR [replace]`: untar into the dir, then chown -R to its owner."""
    if d.host != host:
        raise CompileError(f"extract into {d.name} runs on `{d.host}`, but the archive is on `{host}`", step.span,
                           help="transfer the archive to the dir's host first")
    known = ctx.format_of(host, path)
    if known is not None and known.engine != "tar":
        raise CompileError(f'{host}:"{path}" holds a {known.engine} artifact, not a tar archive', step.span)
    comp = known.compress if known else ("zstd" if path.endswith((".zst", ".tzst")) else
                                         "gzip" if path.endswith((".gz", ".tgz")) else "none")
    replace = bool(option_value(step, "replace", False))
    tools = ["tar", "mkdir", "find", "rm"] + (["chown"] if d.owner else []) + (
        ["zstd"] if comp == "zstd" else ["gzip"] if comp == "gzip" else [])
    find, root = dir_root(ctx, d, "mdsl_dir", create=True)
    make = find if is_volume(d) else sh("mkdir -p --", root, "&&")
    cmd = ctx.command(host, sh(
        *make, *(_empty(root) if replace else ()),
        "tar --no-unquote", *_numeric(d), "-C", root, *_tar_compress_flags(comp, True), "-xpf", Arg(path),
        *_own(d, root),
    ), tools=tools + (["docker"] if is_volume(d) else []))
    return [Shell(cmd, f"extract into {d.name}" + (" (emptied first)" if replace else ""),
                  step_timeout(step, DEFAULT_TIMEOUT))]


def _rsync_pattern(sub: str) -> str:
    # Anchored at the transfer root. rsync reads a backslash as an escape only in a pattern that
    # has a wildcard (`*?[`); then the name's wildcards and backslashes are escaped to match
    # literally. Without one, the name is already literal (`skip a\\b` must stay one backslash).
    name = posixpath.normpath(sub)
    if not any(c in name for c in "*?["):
        return "/" + name
    return "/" + "".join("\\" + c if c in "*?[\\" else c for c in name)


# AES-GCM first (AES-NI, no separate MAC pass): OpenSSH's default, chacha20-poly1305, moves fewer bytes
# per CPU second (bench/transfer.py; docs/performance.md, "What mdsl does to be fast"). Every name has
# been known to OpenSSH since 6.5.
SSH_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
               "aes128-ctr,aes192-ctr,aes256-ctr")


def ssh_command(h: Host) -> str:
    """The `ssh` invocation (one string, as rsync's `-e` and scp want) reaching host `h` non-interactively."""
    words = ["ssh", "-o", "BatchMode=yes", "-o", "Ciphers=" + SSH_CIPHERS, "-p", str(h.port)]
    if h.identity:
        words += ["-i", h.identity]
    if h.known_hosts:
        words += ["-o", "UserKnownHostsFile=" + h.known_hosts]
    return " ".join(shlex.quote(w) for w in words)


def remote(h: Host, path: str) -> str:
    """`user@addr:path` for rsync/scp (the path is quoted again by the word's own Arg)."""
    return f"{h.login}:{path}"


def _sudo_without_password(h: Host) -> bool:
    """A `sudo = true` host whose sudo needs no password: commands reached over ssh run under `sudo -n`."""
    return h.sudo and h.sudo_password is None


def _where_to_run(ctx: CompileContext, src: str, dst: str):
    """Which machine runs a host-to-host copy: the local end when there is one, else the source.

    Returns (runner host, the source Host when it is remote, the target Host when it is remote).
    """
    hs, hd = ctx.host(src), ctx.host(dst)
    if hs.local and hd.local:
        return src, None, None
    if hs.local:
        return src, None, hd
    if hd.local:
        return dst, hs, None
    return src, None, hd  # two SSH hosts: the source pushes (it needs SSH access to the target)


# rsync's exit 24: "some files vanished before they could be transferred". A live pass copies a
# dir its writers still change, so a file deleted between rsync's listing and its reading is
# expected there (and only there): the final pass, with the writers stopped, copies the end state.
_LIVE_24 = ("rc=$?; if [ \"$rc\" -eq 24 ]; then echo 'mdsl: some source files vanished during this live "
            "pass (rsync exit 24); the final sync copies what is left'; rc=0; fi;")

# The final pass finds what changed since the live pass by size and mtime, as rsync does. A file
# rewritten in place while the live pass read it, keeping its size, within one tick of the
# kernel's coarse file clock (a few ms) of the mtime rsync saw, would look unchanged: a torn copy
# the final pass skips. So, after the live pass, every target file whose (copied) mtime is at or
# after the pass's start on the source's clock, less 2 s of slack, gets mtime 0: the final pass
# then re-copies exactly the files that changed near or during the live pass. Comparing against
# the source host's own clock keeps clock skew between the hosts out of it.
_SLACK = 2


_MARK_RECENT = "! -type d -newermt \"@$t\" -exec touch -h -d @0 -- {} +"


def _live_marks(remote_src: Optional[Host], remote_dst: Optional[Host], b: Dir, b_root,
                route: Optional[Route] = None) -> Tuple[Tuple, Tuple]:
    """(what starts the live pass: `t` = the source's clock, what ends it: stale target files to mtime 0)."""
    if remote_src is not None:  # the target pulls: ask the source for its clock
        clock = (Lit("t=$("), Lit(ssh_command(remote_src)), Arg(remote_src.login), Lit("date +%s) &&"))
    else:
        clock = (Lit("t=$(date +%s) &&"),)
    start = (Lit("("), *clock, Lit(f"t=$((t - {_SLACK})) || exit 1;"))
    if remote_dst is not None:  # the source pushes: mark on the target through ssh (one remote shell line)
        sudo = (Lit("sudo -n"),) if _sudo_without_password(remote_dst) else ()
        if is_volume(b):  # found in its mountpoint there: `find -P .`
            find = (Arg(remote_in_volume(b, _sudo_without_password(remote_dst), "find")), Lit("-P ."))
        else:
            find = (*sudo, Lit("find -P"), Arg(shlex.quote(b.path)))
        if route is not None:
            reach = (Lit(route_ssh()), Arg(TARGET_ALIAS))
        else:
            reach = (Lit(ssh_command(remote_dst)), Arg(remote_dst.login))
        mark = (*reach, *find, Lit(_MARK_RECENT))
    else:
        mark = (Lit("find -P"), b_root, Lit(_MARK_RECENT))
    end = (Lit(_LIVE_24 + ' if [ "$rc" -eq 0 ]; then'), *mark,
           Lit('|| { echo "mdsl: cannot mark the files the live pass may have torn" >&2; rc=1; }; fi; exit "$rc")'))
    return start, end


def sync(ctx: CompileContext, step: A.Sync, a: Dir, b: Dir):
    """`sync DIR to DIR [live]`: rsync -a of the content, excluded subpaths left out, chowned to the target owner.

    A `live` pass, and every later sync of the same two dirs (its final pass), mirror the source
    (`--delete`): the final pass removes what the writers deleted between the passes. Excluded
    subpaths are neither copied nor deleted (rsync protects excluded names from `--delete`).
    A live pass also takes rsync's exit 24 (source files vanished) as success.
    """
    live = bool(option_value(step, "live", False))
    pair = (a.name, b.name)
    mirror = live or pair in ctx.live_pairs
    if live:
        ctx.live_pairs.add(pair)
    runner, remote_src, remote_dst = _where_to_run(ctx, a.host, b.host)
    route = copy_route(ctx, step, a.host, b.host)
    find_src, src = _sync_end(ctx, a, remote_src, "mdsl_src", False)
    find_dst, dst = _sync_end(ctx, b, remote_dst, "mdsl_dst", True, route)
    # progress2: one progress line for the whole copy (bytes, rate, ETA); --stats: the bytes sent and received
    args = [Lit("rsync -a --protect-args --info=progress2 --stats")]
    if is_volume(a) or is_volume(b):
        args.append(Lit("--numeric-ids"))  # a volume's files belong to the image's numeric users
    if mirror:
        args.append(Lit("--delete"))
    for s in option_value(step, "exclude", ()):
        args.append(Arg(_rsync_pattern(s), "--exclude="))
    if b.owner:
        args.append(Arg(b.owner, "--chown="))
    other = remote_src or remote_dst
    if other is not None:
        args.append(Lit(rsync_rsh()) if route else Arg(ssh_command(other), "--rsh="))
        far = a if remote_src else b
        if is_volume(far):  # the far rsync runs in the volume's mountpoint (made first, if it is the target)
            args.append(Arg(remote_rsync_path(ctx, far, _sudo_without_password(other), far is b), "--rsync-path="))
        elif _sudo_without_password(other):
            args.append(Lit("--rsync-path='sudo -n rsync'"))
    rsync = (*args, Lit("--"), src, dst)
    if live:
        start, end = _live_marks(remote_src, remote_dst, b, _root_word(dst), route)
        rsync = (*start, *rsync, Lit(";"), *end)
    mk = find_src + find_dst
    if not remote_dst and not is_volume(b):
        mk += sh("mkdir -p --", Arg(b.path), "&&")
    chmod = sh("&& chmod --", Arg(b.mode), _root_word(dst)) if (b.mode and not remote_dst) else ()
    docker = ("docker",) if (is_volume(a) and not remote_src) or (is_volume(b) and not remote_dst) else ()
    cmd = ctx.command(runner, (*mk, *rsync) + chmod, tools=("rsync",) + (("ssh",) if other else ()) + docker)
    what = f"rsync {a.name} -> {b.name}" + (" (live pass)" if live else " (final pass)" if mirror else "")
    dests = [] if is_volume(b) else [Destination(b.host, b.path, None, a.name)]
    actions = [Shell(cmd, what, step_timeout(step, DEFAULT_TIMEOUT), show_output=live, meter="rsync",
                     between_hosts=a.host != b.host, route=route)]
    if b.mode and remote_dst:  # rsync -a gave the target the source's mode: the declared one, on its own host
        find, root = dir_root(ctx, b, "mdsl_dst")
        actions.append(Shell(ctx.command(b.host, (*find, *sh("chmod --", Arg(b.mode), root))),
                             f"chmod {b.name}", step_timeout(step, DEFAULT_TIMEOUT)))
    return actions, dests


def copy_route(ctx: CompileContext, step, src: str, dst: str) -> Optional[Route]:
    """The route of a copy between two SSH hosts (`route = ...`, auto by default); None when one end is local."""
    hs, hd = ctx.host(src), ctx.host(dst)
    mode = option_value(step, "route", None)
    if not needs_route(hs, hd):
        if mode is not None and mode != "auto":
            here = hs.name if hs.local else hd.name
            raise CompileError(f"`route = {mode}` is for copies between two SSH hosts; `{here}` is this machine, "
                               "which copies itself", step.span, help="remove `route`")
        return None
    return Route(src, dst, mode or "auto")


def _sync_end(ctx: CompileContext, d: Dir, far: Optional[Host], var: str, create: bool,
              route: Optional[Route] = None):
    """(shell that finds the dir here, rsync's word for its content): `PATH/`, `"$var/"` for a volume
    here, `login:PATH/` or `login:./` (a volume there, whose mountpoint the far rsync starts in)."""
    if far is not None:
        path = "./" if is_volume(d) else d.path.rstrip("/") + "/"
        return (), Arg(f"{TARGET_ALIAS}:{path}" if route else remote(far, path))
    find, root = dir_root(ctx, d, var, create=create)
    if is_volume(d):
        return find, Lit(f'"${var}/"')
    return find, Arg(d.path.rstrip("/") + "/")


def _root_word(content_word):
    """The dir itself from rsync's word for its content (`"$var/"` -> `"$var"`, `PATH/` -> `PATH`)."""
    if isinstance(content_word, Lit):
        return Lit(content_word.text.replace('/"', '"'))
    return Arg(content_word.value.rstrip("/") or "/")


def transfer(ctx: CompileContext, step: A.Transfer, src: Location, dst: Location):
    """`transfer LOC to LOC [via = ...]`: a copy to `PATH.part`, verified by sha256, then renamed."""
    via = option_value(step, "via", "stream")
    verify = option_value(step, "verify", True)
    dest_res = ctx.bound.place(step.dest)
    src_res = ctx.bound.place(step.source)
    target_file: Optional[File] = None
    if dest_res.resource and ctx.bound.resources[dest_res.resource].kind == "file" and dest_res.subpath is None:
        target_file = ctx.bound.resources[dest_res.resource]
    secret = any(r and ctx.bound.resources[r].kind == "file" and ctx.bound.resources[r].secret
                 for r in (dest_res.resource, src_res.resource))
    hs, hd = ctx.host(src.host), ctx.host(dst.host)
    part = dst.path + ".part"
    push = pull = None
    route = None
    if option_value(step, "route", None) is not None and via not in ("rsync", "scp"):
        raise CompileError(f"`route` is for `via = rsync` or `via = scp`; `via = {via}` goes its own way",
                           step.span, help="remove `route`, or copy with `via = rsync`")
    if via in ("rsync", "scp"):
        runner, remote_src, remote_dst = _where_to_run(ctx, src.host, dst.host)
        route = copy_route(ctx, step, src.host, dst.host)
        s = remote(remote_src, src.path) if remote_src else src.path
        d = remote(remote_dst, part) if remote_dst else part
        if route is not None:
            d = f"{TARGET_ALIAS}:{part}"
        other = remote_src or remote_dst
        if via == "rsync":
            words = [Lit("rsync --partial --inplace --protect-args")]
            if route is not None:
                words.append(Lit(rsync_rsh()))
            elif other is not None:
                words.append(Arg(ssh_command(other), "--rsh="))
            words += [Lit("--"), Arg(s), Arg(d)]
        else:
            words = [Lit("scp -q -p")]
            if route is not None:
                words += [Lit(route_ssh()[len("ssh "):])]  # scp takes ssh's -F
            elif other is not None:
                h = other
                words += [Lit("-o BatchMode=yes"), Arg("Ciphers=" + SSH_CIPHERS, "-o"), Lit("-P"), Arg(str(h.port))]
                if h.identity:
                    words += [Lit("-i"), Arg(h.identity)]
                if h.known_hosts:
                    words += [Arg("UserKnownHostsFile=" + h.known_hosts, "-o")]
            words += [Lit("--"), Arg(s), Arg(d)]
        mk = sh("mkdir -p --", Arg(parent(dst.path)), "&&") if not remote_dst else ()
        push = ctx.command(runner, (Lit("umask 077 &&"), *mk, *words), tools=(via,))
    elif via == "tailscale":
        # The seed's way: `tailscale file cp FILE host:` then `tailscale file get DIR` on the target.
        name = posixpath.basename(src.path)
        ts_name = hd.address or hd.name
        inbox = parent(dst.path) + "/.mdsl-tailscale-inbox"
        push = ctx.command(src.host, sh("tailscale file cp --", Arg(src.path), Arg(ts_name + ":")),
                           tools=("tailscale",))
        pull = ctx.command(dst.host, sh(
            "umask 077 && mkdir -p --", Arg(inbox), "&& tailscale file get --wait --conflict=overwrite",
            Arg(inbox), "&& mv -f -T --", Arg(inbox + "/" + name), Arg(part), "&& rmdir --", Arg(inbox),
        ), tools=("tailscale",))
    fmt = ctx.format_of(src.host, src.path)
    if fmt:
        ctx.remember(dst.host, dst.path, fmt)
    action = CopyArtifact(
        source=src, dest=dst, via=via, verify=bool(verify),
        mode=(target_file.mode if target_file else None) or ("0600" if secret else None),
        owner=target_file.owner if target_file else None, secret=secret,
        dest_sudo=hd.sudo, source_sudo=hs.sudo, push=push, pull=pull,
        timeout=step_timeout(step, DEFAULT_TIMEOUT), route=route)
    return [action], [Destination(dst.host, dst.path, None, src)], secret


def move(ctx: CompileContext, step: A.Move, src: Location, dst: Location):
    """`move LOC to LOC`: a rename on one host (`mv -T`: never into an existing directory)."""
    cmd = ctx.command(src.host, sh("mkdir -p --", Arg(parent(dst.path)), "&& mv -f -T --", Arg(src.path),
                                   Arg(dst.path)), tools=("mv", "mkdir"))
    fmt = ctx.format_of(src.host, src.path)
    if fmt:
        ctx.remember(dst.host, dst.path, fmt)
    return [Shell(cmd, "rename", step_timeout(step, DEFAULT_TIMEOUT))]


# Refused whatever the plan says: deleting these is never what a migration means.
_NEVER_DELETE = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/proc", "/root", "/run",
                 "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/opt"}


def delete(ctx: CompileContext, step: A.Delete, loc: Location):
    """`delete LOC`: rm -rf of exactly that quoted path; `/` and system top-level directories are refused."""
    path = normalize(loc.path, step.span)
    if path in _NEVER_DELETE:
        raise CompileError(f"refusing to delete {path!r}", step.span, help="name the exact data path to delete")
    p = Arg(path)
    # The guard repeats the check on the host: the word handed to rm is exactly this path.
    cmd = ctx.command(loc.host, sh("[ -n", p, "] && [", p, "!= / ] && rm -rf --", p), tools=("rm",))
    return [Shell(cmd, f"delete {path}", step_timeout(step, DEFAULT_TIMEOUT))]
