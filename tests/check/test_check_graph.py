"""`mdsl graph`: the lineage of the seed's migration, as DOT and Mermaid."""

from __future__ import annotations

import re
from pathlib import Path

from mdsl.check.graph import lineage, to_dot, to_mermaid
from mdsl.check.resolve import resolve
from mdsl.cli import main
from mdsl.syntax.parser import parse_file

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "plans" / "examples" / "seed-as-it-went.plan"


def test_the_seed_lineage_shows_the_cache_deleted_and_every_copy():
    nodes, edges = lineage(resolve(parse_file(str(SEED))))
    assert ("old_files/cache", "(deleted)", "3 delete") in edges
    assert ("ubuntu:/root/backup.dump", "beetroot:/root/backup.dump", "5 transfer") in edges
    assert ("beetroot:/root/public-system.tar.gz", "new_files", "8 extract") in edges
    assert nodes["old_files/cache"][1] == "ubuntu"


def test_dot_and_mermaid_name_every_edge_once():
    bound = resolve(parse_file(str(ROOT / "plans" / "gitea-sqlite.plan")))
    _, edges = lineage(bound)
    dot, mermaid = to_dot(bound), to_mermaid(bound)
    assert dot.startswith("digraph mdsl {") and dot.rstrip().endswith("}")
    assert len(re.findall(r"^  \S.* -> .*\[label=", dot, re.M)) == len(edges) == len(re.findall(r" -->\|", mermaid))
    assert '"2.3 archive (without repo-archive)"' in dot


def test_cli_graph_exit_codes(tmp_path, capsys):
    assert main(["graph", str(SEED), "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR")
    bad = tmp_path / "bad.plan"
    bad.write_text("steps { stop nothing }\n")
    assert main(["graph", str(bad)]) == 2
    assert "E102" in capsys.readouterr().out


def test_excluded_and_derived_subpaths_show_what_becomes_of_them(tmp_path):
    plan = tmp_path / "cache.plan"
    plan.write_text('''host old { ssh = "root@192.0.2.1" }
host new { ssh = "root@192.0.2.2" }
dir old_files on old {
  path = "/srv/app/public"
  derived "cache" rebuild "app media refresh"
}
dir new_files on new { path = "/srv/app/public"  owner = "app:app"  fresh = true }
steps {
  sync old_files to new_files exclude "cache", "tmp"
}
''')
    nodes, edges = lineage(resolve(parse_file(str(plan))))
    assert ("old_files/cache", "(rebuilt)", "1 sync: excluded; rebuilt by `app media refresh`") in edges
    assert ("old_files/tmp", "(left behind)", "1 sync: excluded, not copied") in edges
    assert ("old_files", "new_files", "1 sync (without cache, tmp)") in edges
    assert nodes["old_files/tmp"] == ("old_files/tmp\n/srv/app/public/tmp", "old")
    dot = to_dot(resolve(parse_file(str(plan))))
    assert '"old_files/tmp" -> "(left behind)"' in dot and "style=dashed" in dot
