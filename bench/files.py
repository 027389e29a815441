"""Target 5: archive + transfer + extract of a Mastodon-like `public/system` against the seed's tar czf way.

    python3 bench/files.py                # ~20,000 files, ~1 GiB, 2 rounds (about 4-5 minutes)
    python3 bench/files.py --quick        # ~5,000 files, ~256 MiB, 1 round
    python3 bench/files.py --write-docs   # put the figures into docs/performance.md

Two sshd test hosts on 127.0.77.2 (a) and .3 (b). The tree (made once, in a's
root): half the bytes in small text files (JSON/HTML-like, 4-48 KB, about
3x compressible, like cached previews and emoji metadata), half in large
random files (2-3 MB, incompressible, like media attachments). Each round, in
turn:

  seed        what the seed did, by hand: ssh a 'tar czf F.tar.gz -C DIR .';
              ssh a 'scp F.tar.gz root@b:F.tar.gz' (with a's own key for b: the
              hosts share nothing); ssh b 'tar xzf F.tar.gz -C DEST'
  mdsl-zstd   `mdsl apply`: archive old_files to a:"F.tar.zst" (compress = zstd, mdsl's
              default when the name does not say), transfer (stream, sha256 both ends),
              extract into new_files (with its owner), journal, check and connect included
  mdsl-none   the same plan with compress = none (what loopback would prefer)

and it prints each way's median and the archive sizes. The tree is compared
(names and content) after the last round.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys

from _common import (
    MiB, BenchHosts, Side, alternate, command_line, compile_bytecode, hand_made_scp, load, machine, mdsl_apply, table,
    timed, write_doc_block,
)

WORDS = ["status", "account", "media", "attachment", "preview", "card", "emoji", "remote", "local", "federated", "instance", "toot", "boost", "favourite", "reply", "mention", "hashtag", "follow", "timeline", "notification", "avatar", "header", "original", "small", "static", "width", "height", "blurhash", "focus", "description", "language", "visibility", "public", "unlisted", "private", "direct", "https", "example", "social", "created_at", "updated_at", "id", "url", "uri", "content", "spoiler_text", "sensitive"]


def make_tree(root, n_files: int, total: int, seed: int = 7) -> None:
    """Half the bytes in small compressible text files, half in large random files."""
    rnd = random.Random(seed)
    # ~4 MiB of word soup to cut text files from: zstd -3 gets about 3x on it, gzip -6 a little more
    corpus = " ".join(rnd.choice(WORDS) + (str(rnd.randrange(10 ** rnd.randrange(1, 9)))
                                            if rnd.random() < 0.3 else "") for _ in range(700_000)).encode()
    n_media = max(4, (total // 2) // (2_500_000))
    n_text = n_files - n_media
    text_each = (total // 2) // n_text
    for i in range(n_text):
        d = os.path.join(root, "cache", "preview_cards", f"{i // 1000:03d}", f"{(i // 100) % 10:03d}")
        os.makedirs(d, exist_ok=True)
        size = rnd.randint(text_each // 3, text_each * 5 // 3)
        off = rnd.randrange(0, len(corpus) - size)
        with open(os.path.join(d, f"{i:06d}.json"), "wb") as f:
            f.write(corpus[off:off + size])
    for i in range(n_media):
        d = os.path.join(root, "media_attachments", "files", f"{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{i:06d}.mp4"), "wb") as f:
            f.write(os.urandom(rnd.randint(2_000_000, 3_000_000)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=None, help="number of files (default 20000; 5000 with --quick)")
    ap.add_argument("--mib", type=int, default=None, help="total size (default 1024; 256 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    n_files = args.files or (5000 if args.quick else 20000)
    total = (args.mib or (256 if args.quick else 1024)) * MiB
    runs = args.runs or (1 if args.quick else 2)
    compile_bytecode()

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src = a.root / "public-system"
        dest = b.root / "public-system"
        print(f"making {n_files} files, {total // MiB} MiB, in {src}")
        make_tree(str(src), n_files, total)
        real = int(subprocess.run(["du", "-sb", str(src)], capture_output=True, text=True).stdout.split()[0])
        count = int(subprocess.run(f"find {shlex.quote(str(src))} -type f | wc -l", shell=True, capture_output=True,
                                   text=True).stdout)
        q = shlex.quote
        arch_a, arch_b = a.root / "public-system.tar.gz", b.root / "public-system.tar.gz"

        def plan_for(comp: str):
            ext = {"zstd": "tar.zst", "none": "tar", "gzip": "tar.gz"}[comp]
            p = H.base / f"files-{comp}.plan"
            p.write_text(f'''plan "files bench"
{H.host_decl("a")}
{H.host_decl("b")}
dir old_files on a {{ path = "{src}" }}
dir new_files on b {{ path = "{dest}"  owner = "nobody:nogroup"  fresh = true }}
steps {{
  archive old_files to a:"{a.root}/ps.{ext}" compress = {comp}
  transfer a:"{a.root}/ps.{ext}" to b:"{b.root}/ps.{ext}"
  extract b:"{b.root}/ps.{ext}" into new_files replace
}}
''')
            return p

        plans = {c: plan_for(c) for c in ("zstd", "none")}
        sizes = {}

        def clean():
            subprocess.run(f"rm -rf {q(str(dest))} {q(str(b.root))}/ps.* {q(str(a.root))}/ps.* {q(str(arch_a))} "
                           f"{q(str(arch_b))} && mkdir -p {q(str(dest))}", shell=True, check=True)

        # the hosts share nothing: a's own key for b, as an admin would set up (not timed)
        scp = f"scp -q {hand_made_scp(a, b)} {q(str(arch_a))} {q(f'root@{b.address}:{arch_b}')}"

        def seed(side: Side) -> float:
            t = timed(H.ssh_base("a") + [f"tar czf {q(str(arch_a))} -C {q(str(src))} ."])
            sizes["gzip (seed)"] = os.path.getsize(arch_a)
            t += timed(H.ssh_base("a") + [scp])
            t += timed(H.ssh_base("b") + [f"tar xzf {q(str(arch_b))} -C {q(str(dest))}"])
            return t

        def mdsl(comp):
            def run(side: Side) -> float:
                m = mdsl_apply(plans[comp])
                ext = {"zstd": "tar.zst", "none": "tar"}[comp]
                sizes[comp] = os.path.getsize(f"{b.root}/ps.{ext}")
                return m.seconds
            return run

        print(f"{runs} round(s), {count} files, {real / MiB:.0f} MiB; {load()}")
        res = alternate(runs, {"seed": seed, "mdsl-zstd": mdsl("zstd"), "mdsl-none": mdsl("none")}, before=clean)
        diff = subprocess.run(["diff", "-rq", str(src), str(dest)], capture_output=True, text=True)
        assert diff.returncode == 0, diff.stdout[-2000:]
        end_load = load()

    s = res["seed"]
    rows = [[f"`{x.name}`", f"{x.med:.1f}", ", ".join(f"{v:.1f}" for v in x.seconds),
             f"{sizes[k] / MiB:.0f} MiB"]
            for x, k in ((s, "gzip (seed)"), (res["mdsl-zstd"], "zstd"), (res["mdsl-none"], "none"))]
    text = "\n".join([
        f"{count} files, {real / MiB:.0f} MiB (half small text, half incompressible media), archive on a, "
        f"copy a -> b, extract on b; median of {runs} alternating round(s). {machine()}; {end_load} at the end.", "",
        table(["way", "median s", "runs (s)", "archive"], rows), "",
        f"- ratio mdsl (zstd, its default) / seed (tar czf + scp + tar xzf): **{res['mdsl-zstd'].med / s.med:.2f}**",
        f"- mdsl with compress = none: {res['mdsl-none'].med / s.med:.2f} of the seed's time"])
    print()
    print(text)
    if args.write_docs:
        write_doc_block("files", f"`{command_line()}`\n\n" + text)
    return 0 if res["mdsl-zstd"].med < s.med else 1


if __name__ == "__main__":
    sys.exit(main())
